//! The options every `baton` command takes: the configuration file, the
//! NATS server and subject prefix, and the NATS credentials; and the
//! configuration overrides they make.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (see README: Configuration)
    #[arg(long, global = true, env = "BATON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL [default: nats://127.0.0.1:4222]
    #[arg(long, global = true, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Subject prefix: lets several Baton clusters share one NATS [default: baton]
    #[arg(long, global = true, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// NATS nkey seed file of this process's identity (`baton auth init` makes one per role)
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "NATS credentials"
    )]
    pub nats_nkey: Option<PathBuf>,
    /// NATS .creds file (user JWT and seed), for servers in operator mode
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "NATS credentials"
    )]
    pub nats_creds: Option<PathBuf>,
    /// NATS user name (password: BATON_NATS__PASSWORD, or --nats-password)
    #[arg(
        long,
        global = true,
        value_name = "USER",
        help_heading = "NATS credentials"
    )]
    pub nats_user: Option<String>,
    /// NATS password; other users can see flags in `ps`: prefer BATON_NATS__PASSWORD
    #[arg(
        long,
        global = true,
        value_name = "PASSWORD",
        help_heading = "NATS credentials"
    )]
    pub nats_password: Option<String>,
    /// NATS token; other users can see flags in `ps`: prefer BATON_NATS__TOKEN
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        help_heading = "NATS credentials"
    )]
    pub nats_token: Option<String>,
    /// CA certificate (PEM) the NATS server's TLS certificate must chain to; requires TLS
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "NATS credentials"
    )]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that verify clients (with --tls-key)
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "NATS credentials"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Client certificate's private key (PEM)
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "NATS credentials"
    )]
    pub tls_key: Option<PathBuf>,
    /// Let a broker or subagent run on a NATS server that asks for no credentials
    /// (anyone reaching it could run programs on the subagents): experiments only
    #[arg(long, global = true, help_heading = "NATS credentials")]
    pub insecure: bool,
}

impl GlobalArgs {
    /// The configuration keys these flags set, with their values.
    pub(super) fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut overrides: Vec<(&'static str, String)> = Vec::new();
        if let Some(url) = &self.nats_url {
            overrides.push(("nats.url", url.clone()));
        }
        if let Some(prefix) = &self.prefix {
            overrides.push(("prefix", prefix.clone()));
        }
        let paths = [
            ("nats.nkey", &self.nats_nkey),
            ("nats.credentials", &self.nats_creds),
            ("nats.tls_ca", &self.tls_ca),
            ("nats.tls_cert", &self.tls_cert),
            ("nats.tls_key", &self.tls_key),
        ];
        for (key, path) in paths {
            if let Some(path) = path {
                overrides.push((key, path.display().to_string()));
            }
        }
        let texts = [
            ("nats.user", &self.nats_user),
            ("nats.password", &self.nats_password),
            ("nats.token", &self.nats_token),
        ];
        for (key, text) in texts {
            if let Some(text) = text {
                overrides.push((key, text.clone()));
            }
        }
        if self.insecure {
            overrides.push(("nats.insecure", "true".into()));
        }
        overrides
    }
}
