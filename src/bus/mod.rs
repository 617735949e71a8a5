//! The transport: the only module that imports async_nats.
//!
//! It connects, encodes and decodes payloads, and turns subscriptions into
//! streams of typed messages. Requests that cannot be decoded get an
//! [`ErrorReply`] here and never reach an actor; publishes that cannot be
//! decoded are dropped with a warning and counted in [`Stats`].
//!
//! Architecture invariant: the bus knows payload types only as serde types;
//! it never decides anything about jobs, orders or subagents.

mod audit;
mod codec;
mod connect;
mod kv;
mod logs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tracing::{debug, warn};

pub use codec::{decode, encode, DecodeError, Encoding};
pub use connect::{redact_urls, split_url_credentials, Credentials, Tls};
pub use kv::{Kv, KvChange};
pub use logs::{LogsError, OrderLog};

use crate::auth::{Sender, SIGNATURE_HEADER, SIGNER_HEADER};
use crate::protocol::{ErrorCode, ErrorReply, Subjects, CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE};

/// Counters of what the bus refused or dropped.
#[derive(Debug)]
pub struct Stats {
    malformed: AtomicU64,
    connects: AtomicU64,
    reconnected_at_ms: AtomicU64,
    /// Operations the server refused by permissions.
    denied: AtomicU64,
    /// Messages this process refused because of who sent them.
    refused: AtomicU64,
    /// Messages for a stream ([`Bus::append`]) that JetStream did not store.
    unstored: AtomicU64,
    /// The server's permission violation messages, for requests waiting.
    violations: tokio::sync::broadcast::Sender<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            malformed: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            reconnected_at_ms: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            unstored: AtomicU64::new(0),
            violations: tokio::sync::broadcast::channel(64).0,
        }
    }
}

impl Stats {
    /// Messages refused because of who sent them (see `auth::Sender`).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages for a stream ([`Bus::append`]) that JetStream did not store.
    pub fn unstored(&self) -> u64 {
        self.unstored.load(Ordering::Relaxed)
    }

    /// Publishes and subscriptions the server refused to this identity.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Requests answered with `bad_request`/`too_large` plus publishes dropped.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// When this connection last reconnected (after losing the server), in
    /// ms since the epoch; 0 while it never had to.
    pub fn reconnected_at_ms(&self) -> u64 {
        self.reconnected_at_ms.load(Ordering::Relaxed)
    }

    fn count_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// One URL, or several separated by commas (the servers of one cluster).
    pub url: String,
    /// The connection's name, shown by the NATS server's monitoring.
    pub name: String,
    pub connect_timeout: Duration,
    /// Daemons keep trying when the server is not up yet; clients fail fast.
    pub retry_initial_connect: bool,
    /// Largest payload accepted from others.
    pub max_message_bytes: usize,
    /// KV bucket replicas (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    pub credentials: Credentials,
    pub tls: Tls,
    /// A credentials folder whose `identities.toml` says whose signatures
    /// count; `None`: the one beside the seed file, if any.
    pub identities: Option<std::path::PathBuf>,
}

/// Why talking to NATS failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason} (is nats-server running? `baton dev` starts one; `nats/install.sh` installs it)")]
    Connect { url: String, reason: String },
    #[error("no one answers on {subject} (is `baton broker` running against this NATS server and prefix?)")]
    NoResponders { subject: String },
    #[error("no reply on {subject} within {timeout:?}")]
    TimedOut { subject: String, timeout: Duration },
    #[error("{0}")]
    Remote(ErrorReply),
    #[error("bad reply on {subject}: {source}")]
    Decode {
        subject: String,
        #[source]
        source: DecodeError,
    },
    #[error("NATS error on {subject}: {reason}")]
    Transport { subject: String, reason: String },
    #[error("NATS refused {subject} to these credentials ({reason}): their role may not do this; use credentials of a role that may (README: Security)")]
    Denied { subject: String, reason: String },
}

/// Where and how to answer one request.
#[derive(Debug, Clone)]
pub struct Replier {
    reply: Option<String>,
    encoding: Encoding,
}

/// A decoded request waiting for its answer.
#[derive(Debug)]
pub struct Request<T> {
    pub body: T,
    pub replier: Replier,
    /// Who signed it (see `auth::trust`).
    pub sender: Sender,
}

/// A decoded publish.
#[derive(Debug)]
pub struct Received<T> {
    pub subject: String,
    pub body: T,
    /// Who signed it (see `auth::trust`).
    pub sender: Sender,
}

/// What the ordered publisher task takes: a message, or a barrier that
/// resolves once everything queued before it has been handed to NATS.
enum Outgoing {
    Message {
        subject: String,
        headers: Option<HeaderMap>,
        payload: Bytes,
    },
    /// A message for a JetStream stream: sent in order, its acknowledgement
    /// awaited beside the queue.
    Stored {
        subject: String,
        payload: Bytes,
    },
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// A typed handle on one NATS connection; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    outgoing: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    subjects: Subjects,
    stats: Arc<Stats>,
    max_message_bytes: usize,
    replicas: usize,
    /// This identity's key: requests and `post_signed` messages carry its signature.
    signer: Option<Arc<nkeys::KeyPair>>,
    /// The identities whose signatures count; `None`: nothing is checked.
    trust: Option<Arc<connect::TrustSource>>,
}

impl Bus {
    pub async fn connect(settings: &ConnectSettings, subjects: Subjects) -> Result<Bus, BusError> {
        let stats = Arc::new(Stats::default());
        let client = connect::connect(settings, stats.clone()).await?;
        let (signer, trust) = connect::identity(settings)?;
        let (outgoing, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(publish_in_order(client.clone(), queue, stats.clone()));
        Ok(Bus {
            client,
            outgoing,
            subjects,
            stats,
            max_message_bytes: settings.max_message_bytes,
            replicas: settings.replicas,
            signer: signer.map(Arc::new),
            trust: trust.map(Arc::new),
        })
    }

    /// Whether this bus checks signatures (it has identities to trust).
    pub fn checks_senders(&self) -> bool {
        self.trust.is_some()
    }

    /// Queues a publish like [`Bus::post`], signed with this identity's key
    /// (for messages whose receivers check who sent them: heartbeats).
    pub fn post_signed<T: Serialize>(&self, subject: String, value: &T) {
        let payload = Bytes::from(encode(Encoding::MessagePack, value));
        let headers = self.signature(&subject, &payload, None);
        self.enqueue(Outgoing::Message {
            subject,
            headers,
            payload,
        });
    }

    /// The signature headers for `payload` on `subject` (added to `base`).
    fn signature(
        &self,
        subject: &str,
        payload: &[u8],
        base: Option<HeaderMap>,
    ) -> Option<HeaderMap> {
        let Some(key) = &self.signer else {
            return base;
        };
        let mut headers = base.unwrap_or_default();
        headers.insert(SIGNER_HEADER, key.public_key().as_str());
        let signature = crate::auth::sign(key, subject, payload);
        headers.insert(SIGNATURE_HEADER, signature.as_str());
        Some(headers)
    }

    /// Who sent `message`.
    fn sender(&self, message: &Message) -> Sender {
        let Some(trust) = &self.trust else {
            return Sender::Unchecked;
        };
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let (signer, signature) = (header(SIGNER_HEADER), header(SIGNATURE_HEADER));
        trust.check(
            &message.subject,
            &message.payload,
            signer.as_deref(),
            signature.as_deref(),
        )
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// Whether the server asks clients for credentials; `None` until the
    /// first connection is made.
    pub fn auth_required(&self) -> Option<bool> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => {
                Some(self.client.server_info().auth_required)
            }
            _ => None,
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Queues a MessagePack publish without waiting. Everything posted through
    /// one `Bus` (publishes and [`Bus::reply`]s) goes out in the order posted.
    pub fn post<T: Serialize>(&self, subject: String, value: &T) {
        let payload = Bytes::from(encode(Encoding::MessagePack, value));
        self.enqueue(Outgoing::Message {
            subject,
            headers: None,
            payload,
        });
    }

    /// Queues a MessagePack publish for a JetStream stream, in order with
    /// everything posted, without waiting: JetStream's acknowledgement is
    /// awaited beside the queue, and a message it did not store is counted
    /// ([`Stats::unstored`]) and warned about. Nothing waits for it.
    pub fn append<T: Serialize>(&self, subject: String, value: &T) {
        let payload = Bytes::from(encode(Encoding::MessagePack, value));
        self.enqueue(Outgoing::Stored { subject, payload });
    }

    /// Queues the answer to a request, in the encoding it came in, without waiting.
    pub fn reply<T: Serialize>(&self, replier: &Replier, value: &T) {
        let Some(reply) = &replier.reply else {
            debug!("request without reply subject; answer dropped");
            return;
        };
        self.enqueue(Outgoing::Message {
            subject: reply.clone(),
            headers: (replier.encoding == Encoding::Json).then(json_headers),
            payload: Bytes::from(encode(replier.encoding, value)),
        });
    }

    /// Waits until every message posted before this call was handed to NATS,
    /// so a request sent next cannot overtake them.
    pub async fn posted(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.enqueue(Outgoing::Barrier(done));
        let _ = wait.await;
    }

    fn enqueue(&self, message: Outgoing) {
        if self.outgoing.send(message).is_err() {
            warn!("publisher stopped; message dropped");
        }
    }

    /// Sends a MessagePack request and decodes the reply (or its [`ErrorReply`]).
    pub async fn request<Req, Resp>(
        &self,
        subject: String,
        value: &Req,
        timeout: Duration,
    ) -> Result<Resp, BusError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.request_encoded(subject, Encoding::MessagePack, value, timeout)
            .await
    }

    /// Like [`Bus::request`] in a chosen encoding (tests use JSON as a plain client would).
    pub async fn request_encoded<Req, Resp>(
        &self,
        subject: String,
        encoding: Encoding,
        value: &Req,
        timeout: Duration,
    ) -> Result<Resp, BusError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload = Bytes::from(encode(encoding, value));
        let reply = self
            .request_raw(&subject, encoding, payload, timeout)
            .await?;
        decode_reply(&subject, encoding, &reply)
    }

    /// Sends raw bytes as a request and returns the raw reply payload.
    pub async fn request_raw(
        &self,
        subject: &str,
        encoding: Encoding,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let headers = (encoding == Encoding::Json).then(json_headers);
        let headers = self.signature(subject, &payload, headers);
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if let Some(headers) = headers {
            request = request.headers(headers);
        }
        let sent = self
            .unless_denied(
                subject,
                self.client.send_request(subject.to_string(), request),
            )
            .await?;
        match sent {
            Ok(message) => Ok(message.payload),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => BusError::NoResponders {
                    subject: subject.to_string(),
                },
                async_nats::RequestErrorKind::TimedOut => BusError::TimedOut {
                    subject: subject.to_string(),
                    timeout,
                },
                _ => BusError::Transport {
                    subject: subject.to_string(),
                    reason: e.to_string(),
                },
            }),
        }
    }

    /// Awaits `operation`, which publishes on `subject`, unless the server
    /// refuses that publish to these credentials first ([`BusError::Denied`]
    /// at once instead of a timeout).
    pub(crate) async fn unless_denied<F: std::future::Future>(
        &self,
        subject: &str,
        operation: F,
    ) -> Result<F::Output, BusError> {
        let mut violations = self.stats.violations.subscribe();
        let refused = async {
            loop {
                match violations.recv().await {
                    Ok(message) if connect::violation_subject(&message) == Some(subject) => {
                        return message
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        futures::future::pending::<()>().await
                    }
                }
            }
        };
        tokio::select! {
            done = operation => Ok(done),
            reason = refused => Err(BusError::Denied { subject: subject.to_string(), reason }),
        }
    }

    /// Publishes raw bytes (tests send garbage with it).
    pub async fn publish_raw(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(subject.clone(), payload)
            .await
            .map_err(|e| BusError::Transport {
                subject,
                reason: e.to_string(),
            })
    }

    /// Waits until everything published so far has reached the server.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|e| BusError::Transport {
            subject: "(flush)".into(),
            reason: e.to_string(),
        })
    }

    /// Serves requests of type `T` on `subject`. Requests that cannot be
    /// decoded (or are too large) are answered with an error here.
    pub async fn serve<T>(
        &self,
        subject: String,
    ) -> Result<impl Stream<Item = Request<T>> + Unpin + 'static, BusError>
    where
        T: DeserializeOwned + 'static,
    {
        let subscriber = self.subscribe(&subject).await?;
        let bus = self.clone();
        Ok(subscriber
            .filter_map(move |message| futures::future::ready(bus.decode_request(message)))
            .boxed_local())
    }

    /// Listens to publishes of type `T` on `subject` (wildcards allowed).
    /// Payloads that cannot be decoded are dropped with a warning and counted.
    pub async fn listen<T>(
        &self,
        subject: String,
    ) -> Result<impl Stream<Item = Received<T>> + Unpin + 'static, BusError>
    where
        T: DeserializeOwned + 'static,
    {
        let subscriber = self.subscribe(&subject).await?;
        let stats = self.stats.clone();
        let max = self.max_message_bytes;
        let bus = self.clone();
        Ok(subscriber
            .filter_map(move |message| {
                let decoded = decode_publish::<T>(&message, max, || bus.sender(&message));
                if decoded.is_none() {
                    stats.count_malformed();
                }
                futures::future::ready(decoded)
            })
            .boxed_local())
    }

    /// Raw messages on `subject`: (subject, payload). For clients that decode
    /// per subject themselves, such as `baton watch`.
    pub async fn listen_raw(
        &self,
        subject: String,
    ) -> Result<impl Stream<Item = (String, Bytes)> + Unpin + 'static, BusError> {
        let subscriber = self.subscribe(&subject).await?;
        Ok(subscriber.map(|m| (m.subject.to_string(), m.payload)))
    }

    /// Opens (creating when missing) a KV bucket holding values of type `T`.
    pub async fn kv<T>(&self, bucket: &str) -> Result<Kv<T>, BusError> {
        Kv::open(self.client.clone(), bucket, self.replicas, None).await
    }

    /// A bucket whose values expire `max_age` after they were written (set
    /// when the bucket is created).
    pub async fn kv_expiring<T>(&self, bucket: &str, max_age: Duration) -> Result<Kv<T>, BusError> {
        Kv::open(self.client.clone(), bucket, self.replicas, Some(max_age)).await
    }

    async fn subscribe(&self, subject: &str) -> Result<async_nats::Subscriber, BusError> {
        self.client
            .subscribe(subject.to_string())
            .await
            .map_err(|e| BusError::Transport {
                subject: subject.to_string(),
                reason: e.to_string(),
            })
    }

    fn decode_request<T: DeserializeOwned>(&self, message: Message) -> Option<Request<T>> {
        let encoding = encoding_of(&message);
        let replier = Replier {
            reply: message.reply.as_ref().map(|s| s.to_string()),
            encoding,
        };
        let error = if message.payload.len() > self.max_message_bytes {
            ErrorReply::new(
                ErrorCode::TooLarge,
                format!(
                    "payload of {} bytes exceeds the limit of {} bytes",
                    message.payload.len(),
                    self.max_message_bytes
                ),
            )
        } else {
            match decode::<T>(encoding, &message.payload) {
                Ok(body) => {
                    let sender = self.sender(&message);
                    return Some(Request {
                        body,
                        replier,
                        sender,
                    });
                }
                Err(e) => ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!("{e} (on {})", message.subject),
                ),
            }
        };
        self.stats.count_malformed();
        warn!(subject = %message.subject, error = %error.error.message, "malformed request refused");
        self.reply(&replier, &error);
        None
    }
}

/// Connects to `url` with `credentials` and waits for the server's answer.
pub async fn probe_connect(
    url: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<(), String> {
    let settings = probe_settings(url, credentials, timeout);
    let client = connect::connect(&settings, Arc::new(Stats::default()))
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(timeout, client.flush())
        .await
        .map_err(|_| "flush timed out".to_string())?
        .map_err(|e| e.to_string())
}

fn probe_settings(url: &str, credentials: &Credentials, timeout: Duration) -> ConnectSettings {
    ConnectSettings {
        url: url.to_string(),
        name: "baton-probe".into(),
        connect_timeout: timeout,
        retry_initial_connect: false,
        max_message_bytes: 1 << 20,
        replicas: 1,
        credentials: credentials.clone(),
        tls: Tls::default(),
        identities: None,
    }
}

/// Connects to `url` and asks JetStream for account information: true
/// readiness of a server for Baton, used instead of sleeping after a start.
/// `credentials` are those of an identity that may ask (every Baton role).
pub async fn probe_jetstream(
    url: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<(), String> {
    let settings = probe_settings(url, credentials, timeout);
    let client = connect::connect(&settings, Arc::new(Stats::default()))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let jetstream = async_nats::jetstream::new(client);
    match tokio::time::timeout(timeout, jetstream.query_account()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("jetstream account info: {e}")),
        Err(_) => Err("jetstream account info: timed out".into()),
    }
}

/// Publishes queued messages one after another, so their order is kept.
async fn publish_in_order(
    client: async_nats::Client,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    stats: Arc<Stats>,
) {
    let jetstream = async_nats::jetstream::new(client.clone());
    while let Some(outgoing) = queue.recv().await {
        let (subject, headers, payload) = match outgoing {
            Outgoing::Message {
                subject,
                headers,
                payload,
            } => (subject, headers, payload),
            Outgoing::Stored { subject, payload } => {
                store(&jetstream, subject, payload, &stats).await;
                continue;
            }
            Outgoing::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let result = match headers {
            Some(headers) => {
                client
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
            }
            None => client.publish(subject.clone(), payload).await,
        };
        if let Err(e) = result {
            warn!(%subject, error = %e, "publish failed");
        }
    }
}

/// Sends one message to JetStream and awaits its acknowledgement in a task
/// of its own, counting it when it was not stored.
async fn store(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    payload: Bytes,
    stats: &Arc<Stats>,
) {
    let unstored = |stats: &Stats, subject: &str, error: String| {
        stats.unstored.fetch_add(1, Ordering::Relaxed);
        warn!(%subject, %error, "message for a stream not stored");
    };
    match jetstream.publish(subject.clone(), payload).await {
        Ok(ack) => {
            let stats = stats.clone();
            tokio::spawn(async move {
                if let Err(e) = ack.await {
                    unstored(&stats, &subject, e.to_string());
                }
            });
        }
        Err(e) => unstored(stats, &subject, e.to_string()),
    }
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE);
    headers
}

fn encoding_of(message: &Message) -> Encoding {
    let json = message
        .headers
        .as_ref()
        .and_then(|h| h.get(CONTENT_TYPE_HEADER))
        .is_some_and(|v| v.as_str().starts_with(JSON_CONTENT_TYPE));
    if json {
        Encoding::Json
    } else {
        Encoding::MessagePack
    }
}

fn decode_publish<T: DeserializeOwned>(
    message: &Message,
    max: usize,
    sender: impl FnOnce() -> Sender,
) -> Option<Received<T>> {
    if message.payload.len() > max {
        warn!(subject = %message.subject, bytes = message.payload.len(), "oversized message dropped");
        return None;
    }
    match decode::<T>(encoding_of(message), &message.payload) {
        Ok(body) => Some(Received {
            subject: message.subject.to_string(),
            body,
            sender: sender(),
        }),
        Err(e) => {
            warn!(subject = %message.subject, error = %e, "malformed message dropped");
            None
        }
    }
}

/// Decodes a reply: the expected type, or the [`ErrorReply`] a peer sent instead.
fn decode_reply<T: DeserializeOwned>(
    subject: &str,
    encoding: Encoding,
    payload: &[u8],
) -> Result<T, BusError> {
    if let Ok(error) = decode::<ErrorReply>(encoding, payload) {
        return Err(BusError::Remote(error));
    }
    decode(encoding, payload).map_err(|source| BusError::Decode {
        subject: subject.to_string(),
        source,
    })
}
