//! A normal stop: on SIGTERM, Ctrl-C or a stop request the subagent takes
//! no new tasks, lets running ones finish (killing them after the drain
//! timeout), has their results acknowledged, leaves and exits 0.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{start, Drain, Subagent};
use crate::bus::Bus;
use crate::config::Config;
use crate::protocol::*;

/// After the drain timeout, how long results may still take to be acknowledged.
const LEAVE_GRACE: Duration = Duration::from_secs(15);

impl Subagent {
    /// A normal stop: no new tasks, running ones finish (killed after the
    /// drain timeout), results are acknowledged, then leave and exit.
    pub(super) fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        self.draining = true;
        info!(running = self.tasks.running_len(), "draining");
        self.heartbeat();
        self.hurry(ctx);
        let timeout = self.config.subagent.drain_timeout;
        ctx.run_later(timeout, move |act, _| {
            let reason = format!(
                "killed by its subagent: still running after the drain timeout ({})",
                humantime::format_duration(timeout)
            );
            for (task_id, running) in act.tasks.all_running_mut() {
                if let Some(kill) = running.take_kill() {
                    warn!(task = %task_id, "drain timeout; killing the task");
                    let _ = kill.send(reason.clone());
                }
            }
        });
        ctx.run_later(timeout + LEAVE_GRACE, |act, ctx| {
            if !act.leaving {
                let pending = act.tasks.unacked_len();
                act.exit(
                    Err(format!(
                        "drained, but {pending} result(s) were never acknowledged by a broker"
                    )),
                    ctx,
                );
            }
        });
        self.leave_if_drained(ctx);
    }

    pub(super) fn leave_if_drained(&mut self, ctx: &mut Context<Self>) {
        if !self.draining || self.leaving || !self.tasks.is_idle() {
            return;
        }
        self.leaving = true;
        let bus = self.bus.clone();
        let subject = bus.subjects().leave();
        let leave = Leave {
            subagent_id: self.id.clone(),
            instance_id: self.instance_id.clone(),
        };
        let request = async move {
            for _ in 0..3 {
                match bus
                    .request::<_, Left>(subject.clone(), &leave, Duration::from_secs(2))
                    .await
                {
                    Ok(_) => return true,
                    Err(e) => debug!(error = %e, "leave not acknowledged"),
                }
            }
            false
        };
        ctx.spawn(request.into_actor(self).map(|acknowledged, act, ctx| {
            if acknowledged {
                info!("drained; left the cluster");
            } else {
                warn!("drained; no broker acknowledged the leave");
            }
            act.exit(Ok(()), ctx);
        }));
    }
}

/// Runs a subagent until it has drained after SIGINT/SIGTERM or a stop
/// request, or until it cannot go on.
pub async fn run_until_signal(config: Config, bus: Bus) -> anyhow::Result<()> {
    let (done, mut finished) = oneshot::channel();
    let subagent = start(config, bus, done).await?;
    let result = tokio::select! {
        _ = crate::daemon::wait_for_signal() => {
            info!("signal received; draining (signal again to stop at once)");
            subagent.do_send(Drain);
            tokio::select! {
                r = &mut finished => r,
                _ = crate::daemon::wait_for_signal() => Ok(Err("stopped before draining finished".into())),
            }
        }
        r = &mut finished => r,
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(anyhow::anyhow!(reason)),
        Err(_) => Err(anyhow::anyhow!("the subagent stopped unexpectedly")),
    }
}
