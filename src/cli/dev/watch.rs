//! What `baton dev` does when one of its processes ends.
//!
//! - While the cluster comes up, any process that ends stops `baton dev`:
//!   restarting would hide why it cannot start.
//! - nats-server ending stops `baton dev`: nothing works without it.
//! - Once up, a `baton` child that ends (kill -9 included: killing
//!   subagents and agents is how the fail-over is tried out) is reported and
//!   started again under the same name, as a supervisor would in
//!   production; a fourth end of the same child within a minute stops
//!   `baton dev` instead of restarting it in a loop.
//!
//! Stopping is an error carrying the report ([`Exited`]'s message), so
//! `baton dev` stops every other process and exits non-zero.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::launch::{Exited, LocalCluster};

/// How often the children are checked.
const POLL: Duration = Duration::from_millis(100);
/// Restarts of one child allowed within [`WINDOW`].
pub const RESTARTS: usize = 3;
const WINDOW: Duration = Duration::from_secs(60);

/// Recent restarts, per child name: when the next one is allowed.
#[derive(Debug, Default)]
pub struct Restarts {
    recent: HashMap<String, Vec<Instant>>,
}

impl Restarts {
    /// Whether `name`, ended at `now`, may start again; counts it if so.
    pub fn allow(&mut self, name: &str, now: Instant) -> bool {
        let recent = self.recent.entry(name.to_string()).or_default();
        recent.retain(|at| now.saturating_duration_since(*at) < WINDOW);
        if recent.len() >= RESTARTS {
            return false;
        }
        recent.push(now);
        true
    }
}

/// Runs `until` while watching the cluster's processes: with `restarts`
/// (the cluster is up), a `baton` child that ends is started again as the
/// module docs say; otherwise any process that ends fails this with its report.
pub async fn watch<T>(
    cluster: &mut LocalCluster,
    until: impl Future<Output = anyhow::Result<T>>,
    mut restarts: Option<&mut Restarts>,
) -> anyhow::Result<T> {
    tokio::pin!(until);
    let mut poll = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            result = &mut until => return result,
            _ = poll.tick() => {}
        }
        while let Some(exited) = cluster.exited() {
            let Some(restarts) = restarts.as_deref_mut() else {
                bail!("before the cluster was up, {exited}");
            };
            restart(cluster, restarts, exited)?;
        }
    }
}

/// Starts `exited` again and says so, or fails with why it is not.
fn restart(
    cluster: &mut LocalCluster,
    restarts: &mut Restarts,
    exited: Exited,
) -> anyhow::Result<()> {
    if exited.is_nats_server() {
        bail!("{exited}; nothing works without it");
    }
    if !restarts.allow(&exited.name, Instant::now()) {
        bail!(
            "{exited}; it ended {} times within {}s, so it is not started again",
            RESTARTS + 1,
            WINDOW.as_secs()
        );
    }
    let pid = cluster.respawn(&exited)?;
    eprintln!("baton dev: {exited}; started it again (pid {pid})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_restarts_three_times_a_minute_then_no_more() {
        let mut restarts = Restarts::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(restarts.allow("sub-1", at(0)));
        assert!(restarts.allow("sub-1", at(10)));
        assert!(
            restarts.allow("sub-2", at(15)),
            "each child has its own count"
        );
        assert!(restarts.allow("sub-1", at(20)));
        assert!(!restarts.allow("sub-1", at(30)), "a fourth within a minute");
        assert!(
            restarts.allow("sub-1", at(61)),
            "the first has left the window"
        );
        assert!(!restarts.allow("sub-1", at(62)));
    }
}
