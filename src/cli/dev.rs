//! `baton dev`: a whole cluster on one machine for trying Baton: nats-server
//! (nats/dev.conf, data under .baton/dev/), one broker, three subagents and
//! two agents as child processes, with examples/jobs.toml deployed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::auth::{AuthDir, Role};
use crate::bus::Credentials;
use crate::config::Config;
use crate::launch::{LocalCluster, Logs, Security};
use crate::natsd::NatsServerOptions;
use crate::protocol::{DeployReply, DeployRequest};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// How many subagents to start
    #[arg(long, default_value_t = 3)]
    pub subagents: usize,
    /// How many agents to start (one of them fires the deployed triggers)
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Client port for nats-server
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// Jobs to deploy once the cluster is up
    #[arg(long, default_value = "examples/jobs.toml")]
    pub jobs: PathBuf,
}

/// Where `baton dev` keeps its credentials (nats/dev.conf includes its `auth.conf`).
const AUTH_DIR: &str = ".baton/dev/auth";

/// `baton dev`'s admin credentials, for a client command without credentials
/// of its own that talks to a server on this machine, run in the repository
/// (or below it) while `baton dev` has made them.
pub fn local_credentials(url: &str) -> Option<Credentials> {
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
        .map(|dir| dir.join(AUTH_DIR).join("admin.nk"))
        .find(|seed| seed.is_file())?;
    tracing::debug!(seed = %seed.display(), "using baton dev's admin credentials");
    Some(Credentials::NkeyFile(seed))
}

pub async fn run(config: &Config, args: DevArgs) -> anyhow::Result<()> {
    let conf = PathBuf::from("nats/dev.conf");
    if !conf.exists() {
        bail!("nats/dev.conf not found: run `baton dev` from the top of the Baton repository");
    }
    let deployment = crate::jobs::load_deploy_file(&args.jobs)?;
    std::fs::create_dir_all(".baton/dev").context("cannot create .baton/dev")?;
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
        port: Some(args.port),
        store_dir: PathBuf::from(".baton/dev"),
        config_file: Some(conf),
        log_file: Some(PathBuf::from(".baton/dev/nats-server.log")),
        ..Default::default()
    };
    let exe = std::env::current_exe().context("cannot find the baton executable")?;
    let security = Security::Auth(AUTH_DIR.into());
    let mut cluster = LocalCluster::start(nats, exe, &config.prefix, Logs::Prefixed, security)
        .await
        .with_context(|| {
            format!(
                "cannot start nats-server on port {} (is another one running? try --port)",
                args.port
            )
        })?;
    cluster.spawn("broker", &["broker", "--id", "broker-dev"])?;
    for i in 1..=args.subagents {
        cluster.spawn_subagent(&format!("sub-{i}"), &[])?;
    }
    for i in 1..=args.agents {
        cluster.spawn(
            &format!("agent-{i}"),
            &["agent", "--id", &format!("agent-{i}")],
        )?;
    }
    let bus = cluster.client().await?;
    cluster.wait_for_subagents(&bus, args.subagents).await?;
    let reply: DeployReply = bus
        .request(
            bus.subjects().deploy(),
            &DeployRequest {
                dry_run: false,
                jobs: deployment.jobs,
                clusters: deployment.clusters,
                workflows: deployment.workflows,
                ..Default::default()
            },
            Duration::from_secs(10),
        )
        .await?;

    let url = cluster.nats.url();
    let client_seed = admin_seed.with_file_name("client.nk");
    // another port than the default needs the URL in every command
    let (url_flag, url_export) = if args.port == 4222 {
        (String::new(), String::new())
    } else {
        (
            format!(" --nats-url {url}"),
            format!("  export BATON_NATS__URL={url}\n"),
        )
    };
    let run = format!("cargo run --release --{url_flag}");
    let pids: Vec<String> = cluster
        .procs()
        .iter()
        .map(|p| format!("{} (pid {})", p.name, p.pid()))
        .collect();
    eprintln!(
        "\nbaton dev is up: nats-server at {url}, {}\n\
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
         {run} watch clock                           (fired every 10s by the Scheduler agent)\n  \
         {run} scheduler on agent-2                  (move the Scheduler role)\n  \
         {run} audit                                 (who changed what)\n  \
         nats req baton.api.submit '{{\"job\":\"hello\"}}' -H Content-Type:application/json -s {url} \\\n      \
         --nkey {} --inbox-prefix {client_inbox}\n\n\
         Kill a subagent or the Scheduler agent with `kill -9 PID` and watch the others carry on.\n\
         The bus needs credentials: commands run in this repository find them in {AUTH_DIR}; elsewhere:\n  \
         export BATON_NATS__NKEY={}\n{url_export}\
         Ctrl-C stops everything.\n",
        pids.join(", "),
        args.jobs.display(),
        reply.deployed.join(", "),
        if reply.workflows.is_empty() {
            String::new()
        } else {
            format!("; workflows: {}", reply.workflows.join(", "))
        },
        client_seed.display(),
        admin_seed.display(),
    );
    super::wait_for_signal().await;
    eprintln!("stopping");
    cluster.stop(Duration::from_secs(5));
    Ok(())
}
