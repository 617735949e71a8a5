//! What every bench shares before and after it measures: the flags common
//! to all of them, the local cluster it starts (nats-server, brokers,
//! subagents, through `launch::LocalCluster`), its scratch folder, and the
//! configuration its children run with. `CommonArgs` (`--logs`, `--json`)
//! is flattened into every scenario's flags; `LocalBench` also keeps the
//! evidence files beside kept logs, and stops the cluster.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::bus::Bus;
use crate::config::Config;
use crate::launch::{LocalCluster, Logs, Security};
use crate::natsd::NatsServerOptions;

/// The flags of every bench.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Keep the cluster's logs, and any evidence files the bench's tasks
    /// write (markers, executed slots), in this folder
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// Print the figures as JSON
    #[arg(long)]
    pub json: bool,
}

impl CommonArgs {
    /// Prints a bench's report: as JSON, or as the bench's table.
    pub fn emit<R: Serialize>(&self, report: &R, table: impl FnOnce(&R)) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            table(report);
        }
        Ok(())
    }

    /// A line of progress on stderr, left out with `--json`.
    pub fn progress(&self, line: impl Display) {
        if !self.json {
            eprintln!("{line}");
        }
    }
}

/// What a bench's local cluster runs.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// Broker processes, each named after its id.
    pub brokers: &'a [&'a str],
    /// Subagents `sub-1..=subagents`.
    pub subagents: usize,
    /// Tasks each subagent runs at once.
    pub capacity: u32,
    /// NATS authentication and signatures, as production runs; off only
    /// when a bench measures without them.
    pub auth: bool,
    /// Environment (`BATON_*` settings) for every process of the cluster.
    pub env: &'a [(&'a str, &'a str)],
}

impl Setup<'static> {
    /// One broker, `broker`, and `subagents` of `capacity` slots, with
    /// authentication.
    pub fn subagents(subagents: usize, capacity: u32) -> Setup<'static> {
        Setup {
            brokers: &["broker"],
            subagents,
            capacity,
            auth: true,
            env: &[],
        }
    }
}

/// The subagents' ids: `sub-1..=n`.
pub fn subagent_ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("sub-{i}")).collect()
}

/// A bench's local cluster, a client connected to it, and its scratch
/// folder (removed at the end; kept logs and evidence live elsewhere).
pub struct LocalBench {
    pub cluster: LocalCluster,
    pub bus: Bus,
    work: PathBuf,
    logs: Option<PathBuf>,
    started: Instant,
}

impl LocalBench {
    /// Starts nats-server, the brokers and the subagents of `setup` in a
    /// scratch folder named after this process (logs in `--logs`, else in
    /// the scratch folder), and waits until the subagents are available.
    pub async fn start(setup: Setup<'_>, common: &CommonArgs) -> anyhow::Result<LocalBench> {
        let started = Instant::now();
        let work = std::env::temp_dir().join(format!("baton-bench-{}", std::process::id()));
        match start_cluster(&work, common.logs.clone(), setup).await {
            Ok((cluster, bus)) => Ok(LocalBench {
                cluster,
                bus,
                work,
                logs: common.logs.clone(),
                started,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                Err(e)
            }
        }
    }

    /// Where the bench's tasks write their evidence `stem` (of the run
    /// `tag`, if several): beside the kept logs, named after this process,
    /// so the evidence stays too; else in the scratch folder.
    pub fn evidence(&self, stem: &str, tag: Option<&str>) -> PathBuf {
        let tag = tag.map(|t| format!("-{t}")).unwrap_or_default();
        match &self.logs {
            Some(logs) => logs.join(format!("{stem}-{}{tag}", std::process::id())),
            None => self.work.join(format!("{stem}{tag}")),
        }
    }

    /// Seconds since [`LocalBench::start`] was called.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The peak memory of the process `name`, if it ran.
    pub fn peak_memory_kib(&self, name: &str) -> Option<u64> {
        self.cluster
            .pid(name)
            .and_then(LocalCluster::peak_memory_kib)
    }

    /// The resident memory of the process `name` now, if it runs.
    pub fn memory_kib(&self, name: &str) -> Option<u64> {
        self.cluster.pid(name).and_then(LocalCluster::memory_kib)
    }

    /// Stops the cluster and removes the scratch folder; returns the
    /// seconds since [`LocalBench::start`], the stop included.
    pub fn stop(mut self) -> f64 {
        self.cluster.stop(Duration::from_secs(5));
        drop(self.cluster);
        let _ = std::fs::remove_dir_all(&self.work);
        self.started.elapsed().as_secs_f64()
    }

    /// Stops the bench, then prints the report its `run` came to (see
    /// [`CommonArgs::emit`]), `stamp`ed first with the seconds the bench
    /// took, the stop included.
    pub fn finish<R: Serialize>(
        self,
        run: anyhow::Result<R>,
        common: &CommonArgs,
        stamp: impl FnOnce(&mut R, f64),
        table: impl FnOnce(&R),
    ) -> anyhow::Result<()> {
        let elapsed_s = self.stop();
        let mut report = run?;
        stamp(&mut report, elapsed_s);
        common.emit(&report, table)
    }
}

async fn start_cluster(
    work: &Path,
    logs: Option<PathBuf>,
    setup: Setup<'_>,
) -> anyhow::Result<(LocalCluster, Bus)> {
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let logs = logs.unwrap_or_else(|| work.join("logs"));
    let nats = NatsServerOptions {
        port: None,
        store_dir: work.join("nats"),
        config_file: None,
        log_file: Some(work.join("nats-server.log")),
        ..Default::default()
    };
    let exe = std::env::current_exe()?;
    let ids = subagent_ids(setup.subagents);
    let security = if setup.auth {
        // every subagent's identity before the server starts (no reloads)
        crate::auth::AuthDir::init(&work.join("auth"), "bench", &ids)?;
        Security::Auth(work.join("auth"))
    } else {
        Security::Insecure
    };
    let mut cluster = LocalCluster::start(nats, exe, "bench", Logs::Dir(logs), security).await?;
    for (key, value) in setup.env {
        cluster.env(key, value);
    }
    for id in setup.brokers {
        spawn_broker(&mut cluster, id)?;
    }
    let capacity = setup.capacity.to_string();
    for id in &ids {
        cluster.spawn_subagent(id, &["--capacity", &capacity])?;
    }
    let bus = cluster.client().await?;
    cluster.wait_for_subagents(&bus, setup.subagents).await?;
    Ok((cluster, bus))
}

/// Starts `baton broker --id <id>` named `id` (again, after a kill).
pub fn spawn_broker(cluster: &mut LocalCluster, id: &str) -> anyhow::Result<u32> {
    cluster.spawn(id, &["broker", "--id", id])
}

/// The configuration the cluster's processes load: they inherit this
/// process's environment (`BATON_CONFIG`, `BATON_*`), so the settings a
/// bench reports are theirs.
pub fn children_config() -> anyhow::Result<Config> {
    let file = std::env::var_os("BATON_CONFIG").map(PathBuf::from);
    Config::load(file.as_deref(), &[]).context("configuration")
}

/// A duration in whole milliseconds, as the reports print settings.
pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
