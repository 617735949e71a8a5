//! What the Scheduler watches: the deployed jobs' and workflows' triggers
//! (the `jobs` and `workflows` buckets) and the operators' pauses of them
//! (`job.NAME` keys in the `switches` bucket), as one kind of change each.

use futures::stream::{LocalBoxStream, StreamExt};

use crate::bus::{Bus, BusError, Kv};
use crate::config::Config;
use crate::protocol::{
    JobSpec, MisfirePolicy, OperatorSwitch, TriggerSpec, WorkflowSpec, JOB_SWITCH,
};
use crate::triggers::workflow_key;

/// A bucket the Scheduler watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Source {
    Jobs,
    Workflows,
    Pauses,
}

/// One change of what is watched.
pub(super) enum Watched {
    /// A job or workflow deployed, changed (`Some`: its triggers and
    /// misfire policy) or removed (`None`), under its schedule key.
    Schedule {
        key: String,
        schedule: Option<(Vec<TriggerSpec>, MisfirePolicy)>,
        /// When this definition was stored (Unix ms): where a schedule
        /// that has never fired starts.
        deployed_ms: u64,
    },
    /// A job or workflow paused (`true`) or resumed, by name.
    Pause { name: String, paused: bool },
    /// A switch of something else (a subagent, an agent).
    Other,
}

pub(super) type Watch = LocalBoxStream<'static, Watched>;

impl Source {
    pub const ALL: [Source; 3] = [Source::Jobs, Source::Workflows, Source::Pauses];

    pub fn name(self) -> &'static str {
        match self {
            Source::Jobs => "jobs",
            Source::Workflows => "workflows",
            Source::Pauses => "switches",
        }
    }

    pub fn bucket(self, config: &Config) -> String {
        match self {
            Source::Jobs => config.jobs_bucket(),
            Source::Workflows => config.workflows_bucket(),
            Source::Pauses => config.switches_bucket(),
        }
    }

    /// Every entry, then every change.
    pub async fn watch(self, bus: Bus, bucket: String) -> Result<Watch, BusError> {
        Ok(match self {
            Source::Jobs => {
                let kv: Kv<JobSpec> = bus.kv(&bucket).await?;
                let watch = kv.watch().await?.map(|change| Watched::Schedule {
                    key: change.key,
                    schedule: change.value.map(|spec| (spec.triggers, spec.misfire)),
                    deployed_ms: change.written_ms,
                });
                watch.boxed_local()
            }
            Source::Workflows => {
                let kv: Kv<WorkflowSpec> = bus.kv(&bucket).await?;
                let watch = kv.watch().await?.map(|change| Watched::Schedule {
                    key: workflow_key(&change.key),
                    schedule: change.value.map(|spec| (spec.triggers, spec.misfire)),
                    deployed_ms: change.written_ms,
                });
                watch.boxed_local()
            }
            Source::Pauses => {
                let kv: Kv<OperatorSwitch> = bus.kv(&bucket).await?;
                let watch =
                    kv.watch()
                        .await?
                        .map(|change| match change.key.strip_prefix(JOB_SWITCH) {
                            Some(name) => Watched::Pause {
                                name: name.to_string(),
                                paused: change.value.is_some_and(|s| s.off),
                            },
                            None => Watched::Other,
                        });
                watch.boxed_local()
            }
        })
    }
}
