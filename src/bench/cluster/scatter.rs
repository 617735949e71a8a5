//! Before a follower round, the worst case for it: the bench moves the
//! brokers' lease stream's leader onto the follower about to be killed
//! (JetStream elects each stream's leader on its own, so this happens by
//! itself too), then waits until the active broker has moved it back
//! beside the orders stream's leader (`broker::colocate`). Without that,
//! the kill stops the lease's renewals for an election's length (4-9 s),
//! longer than the lease, and the active broker steps down.

use std::time::Duration;

use tokio::time::Instant;

use super::elections::{leader_of, WATCHED};
use crate::bus::Bus;

/// The bucket whose stream's leader is moved onto the victim.
pub(super) const SCATTERED: &str = "leader";
/// Longest wait for the move, and for the broker to move it back.
const LIMIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

/// What the scattering did.
pub(super) struct Scatter {
    /// The lease stream's leader was on the victim (moved there, or already).
    pub(super) scattered: bool,
    /// How long after that no watched stream was led by the victim any more.
    pub(super) colocated_ms: Option<u64>,
}

/// Moves the lease stream's leader onto `victim`, then waits until the
/// victim leads none of the watched streams.
pub(super) async fn scatter(observer: &Bus, victim: &str) -> Scatter {
    let stream = format!("KV_{}_{SCATTERED}", super::PREFIX);
    let deadline = Instant::now() + LIMIT;
    let mut scattered = false;
    while !scattered && Instant::now() < deadline {
        if leader_of(observer, SCATTERED).await.as_deref() == Some(victim) {
            scattered = true;
            break;
        }
        // refused while it has no leader or the victim is behind: again
        let _ = observer.move_leader(&stream, None, victim).await;
        tokio::time::sleep(POLL).await;
    }
    if !scattered {
        return Scatter {
            scattered,
            colocated_ms: None,
        };
    }
    let moved = Instant::now();
    let deadline = moved + LIMIT;
    while Instant::now() < deadline {
        let leaders = futures::future::join_all(WATCHED.map(|b| leader_of(observer, b))).await;
        if leaders
            .iter()
            .all(|l| l.is_some() && l.as_deref() != Some(victim))
        {
            return Scatter {
                scattered,
                colocated_ms: Some(moved.elapsed().as_millis() as u64),
            };
        }
        tokio::time::sleep(POLL).await;
    }
    Scatter {
        scattered,
        colocated_ms: None,
    }
}
