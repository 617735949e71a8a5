//! `baton dev`: a whole cluster on one machine for trying Baton: nats-server
//! (nats/dev.conf, data under .baton/dev/), one broker, three subagents and
//! two agents as child processes, with examples/jobs.toml deployed. Run
//! anywhere but the top of a checkout (a `cargo install`ed binary), it
//! writes the copies of both that are built into it to .baton/dev/.
//!
//! It locks .baton/dev before touching it (`lock.rs`), so one store never
//! has two servers, and watches its processes (`watch.rs`): a `baton` child
//! that ends is started again, nats-server ending stops everything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::auth::{AuthDir, Role};
use crate::bus::{Bus, Credentials};
use crate::config::Config;
use crate::jobs::Deployment;
use crate::launch::{LocalCluster, Logs, Security};
use crate::natsd::NatsServerOptions;
use crate::protocol::{DeployReply, DeployRequest};

mod lock;
mod metrics;
mod watch;

use lock::StoreLock;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// How many subagents to start
    #[arg(long, default_value_t = 3)]
    pub subagents: usize,
    /// How many agents to start (one of them fires the deployed triggers)
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Client port for nats-server; 0 picks a free one
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// Jobs to deploy once the cluster is up
    #[arg(long, default_value = DEFAULT_JOBS)]
    pub jobs: PathBuf,
    /// Port of the web console on 127.0.0.1; 0 picks a free one
    #[arg(long, default_value_t = 8080)]
    pub console_port: u16,
    /// Start no web console
    #[arg(long)]
    pub no_console: bool,
    /// Start from an empty cluster: delete the JetStream data (jobs, orders,
    /// switches, audit) and the logs in .baton/dev first; the credentials in
    /// .baton/dev/auth are kept, so seeds exported elsewhere still work
    #[arg(long)]
    pub fresh: bool,
    /// First port of the children's Prometheus metrics (broker, subagents,
    /// agents, one each, on 127.0.0.1); 0 picks free ports
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub metrics_port: u16,
}

/// `baton dev`'s folder; nats/dev.conf names it as its JetStream store.
const STORE: &str = ".baton/dev";
/// Where `baton dev` keeps its credentials (nats/dev.conf includes its `auth.conf`).
const AUTH_DIR: &str = ".baton/dev/auth";
/// nats/dev.conf and examples/jobs.toml as built in, for a folder without them.
const BUILT_IN_CONF: &str = include_str!("../../nats/dev.conf");
const BUILT_IN_JOBS: &str = include_str!("../../examples/jobs.toml");
/// nats/dev.conf's credentials, relative to nats/; beside the store they
/// are at `auth/auth.conf`.
const CHECKOUT_INCLUDE: &str = "include \"../.baton/dev/auth/auth.conf\"";
/// The deploy file `--jobs` names unless told otherwise.
const DEFAULT_JOBS: &str = "examples/jobs.toml";

/// The nats-server configuration: the checkout's nats/dev.conf, else the
/// built-in copy written beside the store (its `include` made relative to
/// there). Also whether this is a checkout, where commands run with cargo.
fn server_conf() -> anyhow::Result<(PathBuf, bool)> {
    let conf = PathBuf::from("nats/dev.conf");
    if conf.exists() {
        return Ok((conf, true));
    }
    let here = Path::new(STORE).join("nats-server.conf");
    let text = BUILT_IN_CONF.replace(CHECKOUT_INCLUDE, "include \"auth/auth.conf\"");
    std::fs::create_dir_all(STORE).with_context(|| format!("cannot create {STORE}"))?;
    std::fs::write(&here, text).with_context(|| format!("cannot write {}", here.display()))?;
    Ok((here, false))
}

/// What to deploy, and where it came from: `--jobs`, or the built-in
/// examples when the default file is not there.
fn deployment(jobs: &Path) -> anyhow::Result<(String, Deployment)> {
    if jobs.exists() || jobs != Path::new(DEFAULT_JOBS) {
        let deployment = crate::jobs::load_deploy_file(jobs)?;
        return Ok((jobs.display().to_string(), deployment));
    }
    let name = format!("the built-in {DEFAULT_JOBS}");
    Ok((
        name.clone(),
        crate::jobs::parse_deploy_file(&name, BUILT_IN_JOBS)?,
    ))
}

/// What `--fresh` deletes from the store folder (never `auth/` or the lock).
const FRESH: [&str; 3] = ["jetstream", "logs", "nats-server.log"];

/// `baton dev`'s admin credentials, for a client command without credentials
/// of its own that talks to a server on this machine, run in the repository
/// (or below it) while `baton dev` has made them.
pub fn local_credentials(url: &str) -> Option<Credentials> {
    local_credentials_of(url, Role::Admin)
}

/// `baton dev`'s credentials of `role`, on the terms of [`local_credentials`].
pub fn local_credentials_of(url: &str, role: Role) -> Option<Credentials> {
    let local = url.split(',').all(|u| {
        let host = u.trim().split("://").last().unwrap_or("");
        host.starts_with("127.0.0.1:") || host.starts_with("localhost:")
    });
    if !local {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    let seed = cwd
        .ancestors()
        .map(|dir| dir.join(AUTH_DIR).join(format!("{role}.nk")))
        .find(|seed| seed.is_file())?;
    tracing::debug!(seed = %seed.display(), "using baton dev's {role} credentials");
    Some(Credentials::NkeyFile(seed))
}

pub async fn run(config: &Config, file: Option<&Path>, args: DevArgs) -> anyhow::Result<()> {
    let (jobs, deployment) = deployment(&args.jobs)?;
    // every child reads the same file (by its full path: they share our folder)
    let file = file.map(|f| {
        std::fs::canonicalize(f)
            .with_context(|| format!("--config {}: cannot read it", f.display()))
    });
    let file = file.transpose()?;
    // before anything in the folder is read or written; dropped last, after
    // the cluster (its nats-server shares it)
    let mut lock = StoreLock::take(Path::new(STORE))?;
    if args.fresh {
        wipe(Path::new(STORE))?;
    }
    let (conf, checkout) = server_conf()?;
    // nats/dev.conf includes the folder's auth.conf, so it must exist first
    let subagents: Vec<String> = (1..=args.subagents).map(|i| format!("sub-{i}")).collect();
    let auth = AuthDir::init(AUTH_DIR.as_ref(), &config.prefix, &subagents)?;
    let admin_seed = std::fs::canonicalize(auth.seed_path(Role::Admin, None))?;
    let client_inbox = auth
        .identities()
        .iter()
        .find(|i| i.name == "client")
        .map(|i| crate::auth::inbox_prefix(&i.public_key))
        .unwrap_or_default();
    let nats = NatsServerOptions {
        port: (args.port != 0).then_some(args.port),
        store_dir: PathBuf::from(STORE),
        config_file: Some(conf),
        log_file: Some(PathBuf::from(STORE).join("nats-server.log")),
        shared_lock: Some(lock.shared()?),
        ..Default::default()
    };
    let exe = std::env::current_exe().context("cannot find the baton executable")?;
    let security = Security::Auth(AUTH_DIR.into());
    let logs = Logs::Prefixed(PathBuf::from(STORE).join("logs"));
    let mut cluster = LocalCluster::start(nats, exe, &config.prefix, logs, security)
        .await
        .map_err(|e| {
            // not another `baton dev` here: that one holds the lock
            if format!("{e:#}").contains("address already in use") {
                let port = args.port;
                e.context(format!(
                    "port {port} is taken by another program: --port picks another"
                ))
            } else {
                e.context("cannot start nats-server")
            }
        })?;
    lock.record(lock::NATS_SERVER, cluster.nats.pid())?;
    if let Some(file) = &file {
        cluster.env("BATON_CONFIG", &file.display().to_string());
    }
    let mut children = vec!["broker".to_string()];
    children.extend((1..=args.subagents).map(|i| format!("sub-{i}")));
    children.extend((1..=args.agents).map(|i| format!("agent-{i}")));
    let metrics = metrics::ports(args.metrics_port, &children)?;
    let console = match args.no_console {
        true => None,
        false => Some(console_addr(args.console_port)?),
    };
    let up = start(&mut cluster, &args, deployment, &metrics, console).await;
    let reply = match up {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("baton dev: stopping the whole cluster");
            stop(&mut cluster);
            return Err(e);
        }
    };

    let url = cluster.nats.url();
    let client_seed = admin_seed.with_file_name("client.nk");
    // another port than the default needs the URL in every command
    let (url_flag, url_export) = if cluster.nats.port() == 4222 {
        (String::new(), String::new())
    } else {
        (
            format!(" --nats-url {url}"),
            format!("  export BATON_NATS__URL={url}\n"),
        )
    };
    let run = match checkout {
        true => format!("cargo run --release --{url_flag}"),
        false => format!("baton{url_flag}"),
    };
    let pids: Vec<String> = cluster
        .procs()
        .iter()
        .map(|p| format!("{} (pid {})", p.name, p.pid()))
        .collect();
    // the last agent: the Scheduler is most often another one
    let other_agent = format!("agent-{}", args.agents.max(1));
    let console_line = match console {
        Some(addr) => format!("web console: http://{addr}/\n"),
        None => String::new(),
    };
    eprintln!(
        "\nbaton dev is up: nats-server at {url} (pid {}), {}\n{console_line}\
         deployed from {}: {}{}\n\n\
         In another terminal:\n  \
         {run} status\n  \
         {run} watch\n  \
         {run} submit hello --param who=you --wait\n  \
         {run} submit count --param n=30 --wait     (then kill -9 its subagent)\n  \
         {run} subagent disable sub-1               (switch-over; enable to undo)\n  \
         {run} order cancel ORDER_ID --kill\n  \
         {run} submit nightly --wait                (a workflow: 4 steps, 2 in parallel)\n  \
         {run} order show ORDER_ID                  (its steps, where each ran, their output)\n  \
         {run} order suspend|resume ORDER_ID        (steer a workflow order)\n  \
         {run} watch clock                          (fired every 10s by the Scheduler agent)\n  \
         {run} scheduler on {other_agent}                 (move the Scheduler role)\n  \
         {run} audit                                (who changed what)\n  \
         nats req baton.api.submit '{{\"job\":\"hello\"}}' -H Content-Type:application/json -s {url} \\\n      \
         --nkey {} --inbox-prefix {client_inbox}\n\n\
         Prometheus metrics: {}\n\n\
         Kill a subagent or the Scheduler agent with `kill -9 PID` and watch the others carry on;\n\
         baton dev starts it again (logs in {STORE}/logs).\n\
         The bus needs credentials: commands run in this folder (or below it) find them in {AUTH_DIR}; elsewhere:\n  \
         export BATON_NATS__NKEY={}\n{url_export}\
         Ctrl-C stops everything.\n",
        cluster.nats.pid(),
        pids.join(", "),
        jobs,
        reply.deployed.join(", "),
        if reply.workflows.is_empty() {
            String::new()
        } else {
            format!("; workflows: {}", reply.workflows.join(", "))
        },
        client_seed.display(),
        metrics::urls(&metrics),
        admin_seed.display(),
    );
    let mut restarts = watch::Restarts::default();
    let signal = async {
        super::wait_for_signal().await;
        Ok(())
    };
    let outcome = watch::watch(&mut cluster, signal, Some(&mut restarts)).await;
    if outcome.is_err() {
        eprintln!("baton dev: stopping the whole cluster");
    } else {
        eprintln!("stopping");
    }
    stop(&mut cluster);
    drop(cluster);
    drop(lock);
    outcome
}

/// Stops the children newest first, then nats-server.
fn stop(cluster: &mut LocalCluster) {
    // without NATS the children cannot drain and leave: no use waiting for it
    let grace = match cluster.nats.is_running() {
        true => Duration::from_secs(5),
        false => Duration::from_secs(1),
    };
    cluster.stop(grace);
    cluster.nats.kill();
}

/// Starts the broker, subagents and agents, waits for the subagents and
/// deploys, stopping at the first process that ends meanwhile.
async fn start(
    cluster: &mut LocalCluster,
    args: &DevArgs,
    deployment: Deployment,
    metrics: &[(String, u16)],
    console: Option<std::net::SocketAddr>,
) -> anyhow::Result<DeployReply> {
    let port = |name: &str| {
        let found = metrics.iter().find(|(n, _)| n == name);
        found.map_or(String::new(), |(_, p)| p.to_string())
    };
    let broker_port = port("broker");
    let listen = ["--metrics-listen", broker_port.as_str()];
    cluster.spawn(
        "broker",
        &[&["broker", "--id", "broker-dev"][..], &listen].concat(),
    )?;
    if let Some(addr) = console {
        cluster.spawn("console", &["console", "--listen", &addr.to_string()])?;
    }
    for i in 1..=args.subagents {
        let id = format!("sub-{i}");
        let p = port(&id);
        cluster.spawn_subagent(&id, &["--metrics-listen", &p])?;
    }
    for i in 1..=args.agents {
        let id = format!("agent-{i}");
        let p = port(&id);
        cluster.spawn(&id, &["agent", "--id", &id, "--metrics-listen", &p])?;
    }
    let bus = cluster.client().await?;
    let up = deploy(bus, args.subagents, deployment);
    watch::watch(cluster, up, None).await
}

async fn deploy(bus: Bus, subagents: usize, deployment: Deployment) -> anyhow::Result<DeployReply> {
    crate::launch::wait_for_subagents(&bus, subagents).await?;
    let request = DeployRequest {
        dry_run: false,
        jobs: deployment.jobs,
        clusters: deployment.clusters,
        workflows: deployment.workflows,
        ..Default::default()
    };
    let deploy = bus.request(bus.subjects().deploy(), &request, Duration::from_secs(10));
    Ok(deploy.await?)
}

/// Where the console listens: 127.0.0.1 on `port`, or on a free port for 0.
fn console_addr(port: u16) -> anyhow::Result<std::net::SocketAddr> {
    let wanted = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let probe = std::net::TcpListener::bind(wanted).map_err(|e| {
        anyhow::anyhow!(
            "the web console cannot listen on {wanted}: {e}: --console-port picks another \
             (0: any free one), --no-console starts none"
        )
    })?;
    Ok(probe.local_addr()?)
}

/// `--fresh`: deletes the cluster's state and logs from `store`, keeping
/// the credentials and the lock.
fn wipe(store: &Path) -> anyhow::Result<()> {
    for name in FRESH {
        let path = store.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot delete {}", path.display()));
            }
            _ => {}
        }
    }
    eprintln!(
        "baton dev: --fresh: deleted the JetStream data and logs in {}",
        store.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_server_configuration_finds_the_credentials_beside_the_store() {
        assert_eq!(BUILT_IN_CONF.matches(CHECKOUT_INCLUDE).count(), 1);
        let written = BUILT_IN_CONF.replace(CHECKOUT_INCLUDE, "include \"auth/auth.conf\"");
        assert!(written.contains("include \"auth/auth.conf\""));
        assert!(written.contains(&format!("store_dir: \"{STORE}\"")));
        let jobs = crate::jobs::parse_deploy_file("built-in", BUILT_IN_JOBS).unwrap();
        assert!(jobs.jobs.iter().any(|j| j.name == "hello"));
    }
}
