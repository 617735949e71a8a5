//! Connecting: credentials (nkey seed file, `.creds`, user and password,
//! token, user information in the URL), TLS, replies taken on the
//! identity's own inbox (`_INBOX.<public key>`), and refusals turned into
//! errors that name the setting to fix. A daemon asks again while a
//! reloading server briefly refuses known credentials, and waits for an
//! unreachable server. Secrets never appear in logs or errors: URLs are
//! shown without their user information.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, ServerError};
use tracing::{debug, error, info, warn};

use super::sender::TrustSource;
use super::{BusError, Stats};
use crate::auth::Trust;

/// How a process proves who it is to NATS.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// A file holding an nkey seed (`baton auth init` makes them).
    NkeyFile(PathBuf),
    /// A `.creds` file: a user JWT and its nkey seed.
    CredsFile(PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Credentials {
    /// Which setting these credentials came from, without any secret.
    pub fn describe(&self) -> String {
        match self {
            Credentials::None => "no credentials".into(),
            Credentials::UserPassword { user, .. } => format!("user {user:?} with nats.password"),
            Credentials::Token(_) => "nats.token".into(),
            Credentials::NkeyFile(path) => format!("the nkey seed in {}", path.display()),
            Credentials::CredsFile(path) => format!("the credentials file {}", path.display()),
        }
    }
}

/// TLS settings; a `tls://` URL or a CA file makes TLS required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Splits `nats://user:pass@host:4222` into the URL without user
/// information and the credentials it held (a lone user part is a token).
pub fn split_url_credentials(url: &str) -> (String, Credentials) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), Credentials::None);
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return (url.to_string(), Credentials::None);
    };
    let credentials = match userinfo.split_once(':') {
        Some((user, password)) => Credentials::UserPassword {
            user: user.to_string(),
            password: password.to_string(),
        },
        None => Credentials::Token(userinfo.to_string()),
    };
    (format!("{scheme}://{host}"), credentials)
}

/// The URL list with any user information replaced, for messages.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let u = u.trim();
            match split_url_credentials(u) {
                (clean, Credentials::None) => clean,
                (clean, _) => clean.replacen("://", "://<redacted>@", 1),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The identities this process trusts: `settings.identities`, else the
/// `identities.toml` beside its seed file; `None` checks no one.
pub(super) fn trust(settings: &super::ConnectSettings) -> Result<Option<TrustSource>, BusError> {
    let seed_dir = match &settings.credentials {
        Credentials::NkeyFile(path) | Credentials::CredsFile(path) => {
            path.parent().map(Path::to_path_buf)
        }
        _ => None,
    };
    let dir = settings
        .identities
        .clone()
        .or_else(|| seed_dir.filter(|dir| dir.join("identities.toml").is_file()));
    let Some(dir) = dir else {
        return Ok(None);
    };
    let trust = Trust::load(&dir).map_err(|e| BusError::Connect {
        url: redact_urls(&settings.url),
        reason: format!("{e:#}"),
    })?;
    debug!(identities = trust.len(), dir = %dir.display(), "trusting signed senders");
    Ok(Some(TrustSource::new(dir, trust)))
}

fn seed_of(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with("SU"))
}

/// A seed or `.creds` file, read once: its text and the key of its seed
/// (which signs, and names the identity's own reply inbox).
struct Loaded {
    text: String,
    key: nkeys::KeyPair,
}

fn load(credentials: &Credentials) -> Result<Option<Loaded>, String> {
    let path = match credentials {
        Credentials::NkeyFile(path) | Credentials::CredsFile(path) => path,
        _ => return Ok(None),
    };
    let text = read(path)?;
    warn_if_shared(path);
    let seed = seed_of(&text).ok_or_else(|| {
        format!(
            "{} holds no user nkey seed (a line starting SU)",
            path.display()
        )
    })?;
    let key = nkeys::KeyPair::from_seed(seed)
        .map_err(|e| format!("{} holds no valid nkey seed: {e}", path.display()))?;
    Ok(Some(Loaded { text, key }))
}

/// Connects; daemons keep trying while the server is unreachable, but stop
/// at once when it refuses their credentials or TLS fails.
/// Returns the client and, with a seed, the key that signs for it.
pub(super) async fn connect(
    settings: &super::ConnectSettings,
    stats: Arc<Stats>,
) -> Result<(async_nats::Client, Option<nkeys::KeyPair>), BusError> {
    let shown = redact_urls(&settings.url);
    let fail = |reason: String| BusError::Connect {
        url: shown.clone(),
        reason,
    };
    let mut credentials = settings.credentials.clone();
    let mut urls = Vec::new();
    for url in settings.url.split(',').map(str::trim) {
        let (clean, from_url) = split_url_credentials(url);
        if credentials == Credentials::None {
            credentials = from_url;
        } else if from_url != Credentials::None {
            warn!(url = %redact_urls(url), using = %credentials.describe(), "the user information in the URL is ignored");
        }
        urls.push(clean);
    }
    let loaded = load(&credentials).map_err(&fail)?;
    let options = || options(settings, &credentials, loaded.as_ref(), stats.clone());
    let signer = |client| Ok((client, loaded.as_ref().map(|l| l.key.clone())));
    // a server reloading its configuration refuses known credentials for a
    // moment, so a daemon asks again until its connect timeout has passed;
    // no credentials at all are refused for good
    let deadline = match credentials {
        Credentials::None => tokio::time::Instant::now(),
        _ => tokio::time::Instant::now() + settings.connect_timeout,
    };
    loop {
        let attempt = options()?.connect(urls.clone());
        let first = match tokio::time::timeout(settings.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) if settings.retry_initial_connect => {
                let why = format!("no answer within {:?}", settings.connect_timeout);
                return signer(retrying(options()?, urls, &shown, why, &fail).await?);
            }
            Err(_) => {
                let after = settings.connect_timeout;
                return Err(fail(format!(
                    "timed out after {after:?} {UNREACHABLE_HINT}"
                )));
            }
        };
        let e = match first {
            Ok(client) => return signer(client),
            Err(e) => e,
        };
        return match e.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication
                if settings.retry_initial_connect && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                Err(fail(refused(&credentials)))
            }
            _ if e.kind() == ConnectErrorKind::Tls || e.to_string().contains("certificate") => {
                Err(fail(format!(
                "TLS failed ({e}): check nats.tls_ca (the CA that signed the server's certificate), \
                 nats.tls_cert and nats.tls_key, and that the server has TLS on"
                )))
            }
            ConnectErrorKind::ServerParse => Err(fail(format!("{e}: check nats.url"))),
            _ if settings.retry_initial_connect => {
                signer(retrying(options()?, urls, &shown, e.to_string(), &fail).await?)
            }
            _ => Err(fail(format!("{e} {UNREACHABLE_HINT}"))),
        };
    }
}

/// While a daemon waits for the server, how often it says so again.
const STILL_WAITING: Duration = Duration::from_secs(10);

/// Connects in the background, retrying, and waits until the server is up,
/// saying so at the default log level (`shown`: the URL, `why`: the first
/// failure) now and every [`STILL_WAITING`] until connected.
async fn retrying(
    options: ConnectOptions,
    urls: Vec<String>,
    shown: &str,
    why: String,
    fail: &impl Fn(String) -> BusError,
) -> Result<async_nats::Client, BusError> {
    warn!(error = %why, "waiting for NATS at {shown}");
    let started = tokio::time::Instant::now();
    // returns at once; the client connects in the background
    let client = options
        .retry_on_initial_connect()
        .connect(urls)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut said = started;
    while client.connection_state() != async_nats::connection::State::Connected {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if said.elapsed() >= STILL_WAITING {
            said = tokio::time::Instant::now();
            let waited = Duration::from_secs(started.elapsed().as_secs());
            let waited = humantime::format_duration(waited);
            warn!(%waited, "waiting for NATS at {shown}");
        }
    }
    Ok(client)
}

/// What to check when no server answered.
const UNREACHABLE_HINT: &str =
    "(is nats-server running? `baton dev` starts one; `nats/install.sh` installs it)";

/// Why the server refused us, and which setting to fix.
fn refused(credentials: &Credentials) -> String {
    match credentials {
        Credentials::None => "the server asks for credentials and none are set: set nats.nkey \
            (--nats-nkey FILE or BATON_NATS__NKEY; `baton auth init DIR` makes one per role, and \
            `baton dev` prints the line to export), or nats.credentials, nats.user and \
            nats.password, or nats.token"
            .into(),
        Credentials::NkeyFile(path) | Credentials::CredsFile(path) => {
            let dev = path.ends_with(".baton/dev/auth/admin.nk");
            format!(
                "the server refused {}{} (authorization violation): the key is unknown to this \
                 server (after `baton auth init` added it, copy auth.conf to the server and \
                 reload it: nats-server --signal reload), or it is another Baton's",
                credentials.describe(),
                if dev {
                    ", `baton dev`'s admin seed, used because no credentials are set"
                } else {
                    ""
                }
            )
        }
        other => format!(
            "the server refused {} (authorization violation): check them against the server's \
             users",
            other.describe()
        ),
    }
}

fn options(
    settings: &super::ConnectSettings,
    credentials: &Credentials,
    loaded: Option<&Loaded>,
    stats: Arc<Stats>,
) -> Result<ConnectOptions, BusError> {
    let fail = |reason: String| BusError::Connect {
        url: redact_urls(&settings.url),
        reason,
    };
    let mut options = ConnectOptions::new()
        .name(&settings.name)
        .connection_timeout(settings.connect_timeout)
        .ping_interval(Duration::from_secs(5))
        .event_callback(move |event| {
            let seen = stats.clone();
            async move { on_event(&seen, event) }
        });
    options = match credentials {
        Credentials::None => options,
        Credentials::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        Credentials::Token(token) => options.token(token.clone()),
        Credentials::NkeyFile(_) | Credentials::CredsFile(_) if loaded.is_none() => options,
        Credentials::NkeyFile(_) => {
            let seed = loaded.and_then(|l| l.key.seed().ok()).unwrap_or_default();
            options.nkey(seed)
        }
        Credentials::CredsFile(path) => {
            let text = loaded.map_or("", |l| l.text.as_str());
            options.credentials(text).map_err(|e| {
                fail(format!(
                    "{} is not a valid credentials file: {e}",
                    path.display()
                ))
            })?
        }
    };
    if let Some(loaded) = loaded {
        let inbox = crate::auth::inbox_prefix(&loaded.key.public_key());
        options = options.custom_inbox_prefix(inbox);
    }
    let tls = &settings.tls;
    if let Some(ca) = &tls.ca {
        check_file(ca, "nats.tls_ca").map_err(&fail)?;
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        check_file(cert, "nats.tls_cert").map_err(&fail)?;
        check_file(key, "nats.tls_key").map_err(&fail)?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if settings
        .url
        .split(',')
        .any(|u| u.trim().starts_with("tls://"))
    {
        options = options.require_tls(true);
    }
    Ok(options)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the credentials file {} (nats.nkey / --nats-nkey / BATON_NATS__NKEY, or \
             nats.credentials / --nats-creds): {e}",
            path.display()
        )
    })
}

/// A seed others can read is an identity others can use: say so.
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            warn!(file = %path.display(), "this seed is readable by other users, who could act as its identity: chmod 600 it");
        }
    }
}

fn check_file(path: &Path, setting: &str) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!(
            "{setting} = {} is not a readable file",
            path.display()
        ))
    }
}

/// The log target of a connection lost and found again, which the CLI
/// shows too: a `watch` or `submit --wait` otherwise goes silent.
pub const LINK: &str = "baton::nats_link";

fn on_event(seen: &Stats, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            if seen.connects.fetch_add(1, Ordering::Relaxed) > 0 {
                seen.reconnected_at_ms
                    .store(crate::time::now_ms(), Ordering::Relaxed);
                info!(target: LINK, "nats reconnected");
            } else {
                info!("nats connected");
            }
        }
        async_nats::Event::Disconnected => {
            warn!(target: LINK, "nats disconnected; reconnecting (what is sent meanwhile waits)")
        }
        async_nats::Event::ServerError(ServerError::AuthorizationViolation) => {
            error!("nats refused this process's credentials (authorization violation): check nats.nkey, nats.credentials, nats.user/password or nats.token")
        }
        async_nats::Event::ServerError(ServerError::Other(message))
            if message.to_lowercase().contains("permissions violation") =>
        {
            // a refused call retried in a loop is said at the 1st, 2nd, 4th... time
            let refused = seen.denied.fetch_add(1, Ordering::Relaxed) + 1;
            if refused.is_power_of_two() {
                warn!(%message, refused, "nats refused an operation: this identity's role does not allow it (said at the 1st, 2nd, 4th... refusal)");
            }
            let _ = seen.violations.send(message);
        }
        other => debug!(event = %other, "nats event"),
    }
}

/// The subject a server's "Permissions Violation for Publish to \"x\""
/// message names.
pub fn violation_subject(message: &str) -> Option<&str> {
    let start = message.find('"')? + 1;
    let len = message[start..].find('"')?;
    Some(&message[start..start + len])
}

/// Connects to `url` with `credentials` and waits for the server's answer.
pub async fn probe_connect(
    url: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<(), String> {
    let client = probe_client(url, credentials, timeout).await?;
    tokio::time::timeout(timeout, client.flush())
        .await
        .map_err(|_| "flush timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// A short-lived connection for a probe, without retries.
async fn probe_client(
    url: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<async_nats::Client, String> {
    let settings = super::ConnectSettings {
        url: url.to_string(),
        name: "baton-probe".into(),
        connect_timeout: timeout,
        retry_initial_connect: false,
        max_message_bytes: 1 << 20,
        replicas: 1,
        credentials: credentials.clone(),
        tls: Tls::default(),
        identities: None,
    };
    let connected = connect(&settings, Arc::new(Stats::default())).await;
    connected
        .map(|(client, _)| client)
        .map_err(|e| format!("connect: {e}"))
}

/// Connects to `url` and asks JetStream for account information: true
/// readiness of a server for Baton, used instead of sleeping after a start.
/// `credentials` are those of an identity that may ask (every Baton role).
pub async fn probe_jetstream(
    url: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<(), String> {
    let client = probe_client(url, credentials, timeout).await?;
    let jetstream = async_nats::jetstream::new(client);
    match tokio::time::timeout(timeout, jetstream.query_account()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("jetstream account info: {e}")),
        Err(_) => Err("jetstream account info: timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_in_a_url_becomes_credentials_and_is_never_shown() {
        let (url, c) = split_url_credentials("nats://ann:s3cret@10.0.0.5:4222");
        assert_eq!(url, "nats://10.0.0.5:4222");
        assert_eq!(
            c,
            Credentials::UserPassword {
                user: "ann".into(),
                password: "s3cret".into()
            }
        );
        let (_, c) = split_url_credentials("tls://xyzzy@h:4222");
        assert_eq!(c, Credentials::Token("xyzzy".into()));
        assert_eq!(split_url_credentials("nats://h:1").1, Credentials::None);
        let shown = redact_urls("nats://ann:s3cret@a:1, nats://b:2");
        assert_eq!(shown, "nats://<redacted>@a:1,nats://b:2");
        assert!(!format!("{c:?}").contains("xyzzy"));
        let up = Credentials::UserPassword {
            user: "ann".into(),
            password: "s3cret".into(),
        };
        assert!(!refused(&up).contains("s3cret"));
    }

    #[test]
    fn a_violation_names_its_subject() {
        let m = "Permissions Violation for Publish to \"baton.api.deploy\"";
        assert_eq!(violation_subject(m), Some("baton.api.deploy"));
        assert_eq!(violation_subject("nothing"), None);
    }

    #[test]
    fn the_inbox_is_named_after_the_seed_s_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = nkeys::KeyPair::new_user();
        let file = dir.path().join("x.nk");
        std::fs::write(&file, format!("{}\n", key.seed().unwrap())).unwrap();
        let found = load(&Credentials::NkeyFile(file))
            .unwrap()
            .map(|l| l.key.public_key());
        assert_eq!(found, Some(key.public_key()));
        let bad = dir.path().join("bad.nk");
        std::fs::write(&bad, "nope").unwrap();
        assert!(load(&Credentials::NkeyFile(bad)).is_err());
        let missing = load(&Credentials::NkeyFile(dir.path().join("none")));
        assert!(missing.err().unwrap().contains("cannot read"));
    }
}
