//! What the benches send to and hear from their cluster, like any client:
//! their jobs and the deploy request carrying them, submits, and event
//! streams merged into one.

use std::time::Duration;

use anyhow::Context as _;
use futures::stream::LocalBoxStream;
use futures::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::bus::Bus;
use crate::protocol::*;

/// A bench's job `name` running `program args`: restartable, a minute's
/// timeout, no parameters, description, cluster or triggers. Set the rest
/// with struct update syntax.
pub fn bench_job(name: &str, program: &str, args: Vec<String>) -> JobSpec {
    JobSpec {
        name: name.into(),
        program: program.into(),
        args,
        env: Default::default(),
        working_dir: None,
        timeout_ms: Some(60_000),
        params: Default::default(),
        description: None,
        cluster: None,
        restartable: true,
        triggers: Vec::new(),
        misfire: Default::default(),
        notify: Default::default(),
        concurrency: Default::default(),
        retry: None,
        spread: None,
    }
}

/// [`bench_job`] running `sh -c script`, with `$0` `arg0` and `$1`.. `args`.
pub fn sh_job(name: &str, script: &str, arg0: &str, args: Vec<String>) -> JobSpec {
    let mut argv = vec!["-c".to_string(), script.to_string(), arg0.to_string()];
    argv.extend(args);
    bench_job(name, "sh", argv)
}

/// A member of a bench's subagent cluster: the subagent `id`.
pub fn member(id: &str, priority: i32) -> ClusterMember {
    ClusterMember {
        subagent: Some(id.to_string()),
        labels: Default::default(),
        priority,
    }
}

/// A deploy request of `jobs` alone; add clusters or workflows with struct
/// update syntax.
pub fn deploy_jobs(jobs: Vec<JobSpec>) -> DeployRequest {
    DeployRequest {
        dry_run: false,
        workflows: Vec::new(),
        jobs,
        clusters: Vec::new(),
        ..Default::default()
    }
}

/// Deploys `request`, waiting up to 10 s for the broker's reply.
pub async fn request_deploy(bus: &Bus, request: &DeployRequest) -> anyhow::Result<()> {
    let _: DeployReply = bus
        .request(bus.subjects().deploy(), request, Duration::from_secs(10))
        .await
        .context("deploy")?;
    Ok(())
}

/// An order of `job` without parameters, request id or slot.
pub fn order_of(job: &str) -> SubmitOrder {
    SubmitOrder {
        job: job.to_string(),
        params: Default::default(),
        request_id: None,
        slot_ms: None,
    }
}

/// The messages published on `subject`, each wrapped by `wrap` into the
/// bench's own event type, so several subjects merge into one stream.
pub async fn listen<T, E>(
    bus: &Bus,
    subject: String,
    wrap: fn(T) -> E,
) -> anyhow::Result<LocalBoxStream<'static, E>>
where
    T: DeserializeOwned + 'static,
    E: 'static,
{
    Ok(bus
        .listen::<T>(subject)
        .await?
        .map(move |r| wrap(r.body))
        .boxed_local())
}
