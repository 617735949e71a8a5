//! What a broker, subagent or agent checks before it starts: that the NATS
//! server asks for credentials, and that its own credentials are its role's
//! (so Baton's own checks can work). `--insecure` turns both off.

use std::time::Duration;

use crate::auth::{identity_name, Role};
use crate::bus::{Bus, OwnIdentity};
use crate::config::Config;
use crate::protocol::Subjects;
use clap::Args;

/// Refuses to start on an open bus or with credentials that are not this
/// process's role's; `id` is a subagent's id.
pub async fn check(bus: &Bus, config: &Config, role: Role, id: Option<&str>) -> anyhow::Result<()> {
    refuse_open_bus(bus, config, role).await?;
    if config.nats.insecure {
        return Ok(());
    }
    let wanted = identity_name(role, id);
    match bus.own_identity() {
        OwnIdentity::Known(identity) if identity.name == wanted => Ok(()),
        OwnIdentity::Known(identity) => anyhow::bail!(
            "these credentials are {}'s, not {wanted}'s: start this {role} with {wanted}.nk \
             (--nats-nkey DIR/{wanted}.nk){}",
            identity.name,
            if role == Role::Subagent {
                format!(", or give it the id its seed is for; to add one: baton auth init DIR --subagent {}", id.unwrap_or("ID"))
            } else {
                String::new()
            }
        ),
        OwnIdentity::Unknown(key) => anyhow::bail!(
            "this seed's public key {key} is not in the identities this {role} trusts \
             (identities.toml): copy the credentials folder's current identities.toml beside \
             the seed, or set nats.identities to the folder"
        ),
        OwnIdentity::NoIdentities => anyhow::bail!(
            "cannot check who sends this {role} commands and reports: no identities.toml beside \
             its seed. Copy the credentials folder's identities.toml (public keys only) beside \
             {wanted}.nk, or set nats.identities (BATON_NATS__IDENTITIES) to a folder holding it; \
             --insecure runs without Baton's own checks"
        ),
        OwnIdentity::NoKey => anyhow::bail!(
            "Baton's own checks need an nkey identity: start this {role} with --nats-nkey \
             DIR/{wanted}.nk (`baton auth init DIR` makes them); with only a user and password \
             or a token, --insecure runs without Baton's own checks"
        ),
    }
}

/// A NATS server that asks for no credentials lets anyone run programs.
async fn refuse_open_bus(bus: &Bus, config: &Config, role: Role) -> anyhow::Result<()> {
    let auth_required = loop {
        match bus.auth_required() {
            Some(required) => break required,
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    if auth_required {
        return Ok(());
    }
    let seed = match role {
        Role::Subagent => "subagent-ID.nk".to_string(),
        _ => format!("{role}.nk"),
    };
    if config.nats.insecure {
        tracing::warn!(
            "the NATS server asks for no credentials: anyone who reaches it can run programs on the subagents (nats.insecure is set)"
        );
        return Ok(());
    }
    anyhow::bail!(
        "refusing to run a {role} on a NATS server that asks for no credentials: anyone who \
         reaches it could run programs on the subagents, forge results or wipe the orders. \
         Make credentials with `baton auth init DIR`, run nats-server with DIR/auth.conf, and \
         start each process with its role's seed (--nats-nkey DIR/{seed}); or pass \
         --insecure (BATON_NATS__INSECURE=true) for an experiment"
    )
}

/// Where to serve `/metrics` (`metrics.listen`, `--metrics-listen`), if
/// anywhere; read before connecting, so a bad address fails at once.
pub fn metrics_addr(config: &Config) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let listen = config.metrics.listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let addr = crate::metrics::labels::parse_listen(listen).map_err(anyhow::Error::msg)?;
    Ok(Some(addr))
}

/// Serves `/metrics` on `addr` (when set), saying where at info.
pub fn serve_metrics(
    addr: Option<std::net::SocketAddr>,
    role: crate::metrics::Role,
    bus: &Bus,
) -> anyhow::Result<()> {
    let Some(addr) = addr else {
        return Ok(());
    };
    let registry = crate::metrics::registry(role, bus.stats().clone());
    let served = crate::metrics::serve(addr, registry)?;
    tracing::info!(url = %served.url(), "serving metrics");
    Ok(())
}

/// `--metrics-listen`, for the broker, subagent and agent.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on http://ADDR/metrics: HOST:PORT, or a port
    /// (on 127.0.0.1) [default: off; metrics.listen]
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// Connects the console as a daemon does (waiting for the server), with
/// its configured credentials, else `baton dev`'s console credentials.
pub async fn connect_console(config: &Config) -> anyhow::Result<Bus> {
    let nats = &config.nats;
    let credentials = crate::daemon::configured_credentials(nats).unwrap_or_else(|| {
        super::dev::local_credentials_of(&nats.url, Role::Console).unwrap_or_default()
    });
    let settings = crate::daemon::connect_settings(config, "baton-console", credentials, true);
    Ok(Bus::connect(&settings, Subjects::new(config.prefix.clone())).await?)
}
