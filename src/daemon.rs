//! What every long-running `baton` process shares, whatever its role:
//! logging, the stop signal, and connecting to NATS from its configuration
//! (waiting for the server, with its own credentials only). The roles
//! (`broker`, `subagent` and its reaper, `agent`) use this, never `cli`.

use crate::bus::{Bus, ConnectSettings, Credentials, Tls};
use crate::config::{Config, NatsConfig};
use crate::protocol::Subjects;

/// The credentials the `[nats]` settings name, if any.
pub fn configured_credentials(nats: &NatsConfig) -> Option<Credentials> {
    Some(if let Some(path) = &nats.nkey {
        Credentials::NkeyFile(path.clone())
    } else if let Some(path) = &nats.credentials {
        Credentials::CredsFile(path.clone())
    } else if !nats.user.is_empty() {
        Credentials::UserPassword {
            user: nats.user.clone(),
            password: nats.password.expose().to_string(),
        }
    } else if !nats.token.is_empty() {
        Credentials::Token(nats.token.expose().to_string())
    } else {
        return None;
    })
}

/// How to connect as configured; `retry`: wait for an unreachable server.
pub fn connect_settings(
    config: &Config,
    name: &str,
    credentials: Credentials,
    retry: bool,
) -> ConnectSettings {
    let nats = &config.nats;
    ConnectSettings {
        url: nats.url.clone(),
        name: name.to_string(),
        connect_timeout: nats.connect_timeout,
        retry_initial_connect: retry,
        max_message_bytes: nats.max_message_bytes,
        replicas: nats.replicas,
        credentials,
        tls: Tls {
            ca: nats.tls_ca.clone(),
            cert: nats.tls_cert.clone(),
            key: nats.tls_key.clone(),
        },
        identities: nats.identities.clone(),
    }
}

/// Connects as a daemon: with the configured credentials (or none), waiting
/// for the server.
pub async fn connect(config: &Config, name: &str) -> anyhow::Result<Bus> {
    let credentials = configured_credentials(&config.nats).unwrap_or_default();
    let settings = connect_settings(config, name, credentials, true);
    Ok(Bus::connect(&settings, Subjects::new(config.prefix.clone())).await?)
}

/// A second connection of this process, named `name`, counting into the
/// first one's `stats` (so `status` reports the process's counts).
pub async fn connect_beside(
    config: &Config,
    name: &str,
    stats: std::sync::Arc<crate::bus::Stats>,
) -> anyhow::Result<Bus> {
    let credentials = configured_credentials(&config.nats).unwrap_or_default();
    let settings = connect_settings(config, name, credentials, true);
    let subjects = Subjects::new(config.prefix.clone());
    Ok(Bus::connect_counting(&settings, subjects, stats).await?)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// What a long-running process logs unless `BATON_LOG` says otherwise.
pub const DAEMON_LOG: &str = "info,async_nats=warn";

/// Logs to stderr, filtered by `BATON_LOG` (else `default`).
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
