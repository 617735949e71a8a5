//! The transport: the only module that imports async_nats.
//!
//! It connects, encodes and decodes payloads, and turns subscriptions into
//! streams of typed messages. Requests that cannot be decoded get an
//! [`ErrorReply`] here and never reach an actor; publishes that cannot be
//! decoded are dropped with a warning and counted in [`Stats`] (shown by
//! `baton status`); requests are answered `bad_request` or `too_large`.
//!
//! [`Bus`] wraps one NATS connection: `post` (ordered, non-blocking
//! publish), `reply`, `request`, `serve` (a stream of decoded requests),
//! `listen` (a stream of decoded publishes), `gather` (a request many
//! answer, `gather.rs`), `kv` (typed JetStream KV buckets, `kv.rs`) and
//! `append` (a JetStream stream, `audit.rs`), `kv_durable` (a durable
//! consumer of a bucket's writes, `durable.rs`), the subject triggers'
//! stream, consumers and dead letters (`triggers.rs`), and where a stream's
//! replicas are on a cluster (`placement.rs`).
//!
//! Architecture invariant: the bus knows payload types only as serde types;
//! it never decides anything about jobs, orders or subagents.
//!
//! At about 510 lines before its tests this file holds the `Bus` type and
//! its core verbs (post, reply, request, serve, listen); each larger piece
//! already lives in a submodule, and what is left is one responsibility.
//!
//! `request.rs` holds the requests (`request`, `request_encoded`,
//! `request_raw`); `authn.rs` how what goes out is signed or coded and who
//! sent what arrives.

mod audit;
mod authn;
mod codec;
mod connect;
mod denied;
mod durable;
mod error;
mod gather;
mod inbound;
mod kv;
mod logs;
mod placement;
mod publish;
mod request;
mod sender;
mod service;
mod session;
mod stats;
mod triggers;

use std::sync::Arc;
use std::time::Duration;

use async_nats::Message;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tracing::{debug, warn};

pub use codec::{decode, encode, DecodeError, Encoding};
pub use connect::{probe_connect, probe_jetstream, LINK};
pub use connect::{redact_urls, split_url_credentials, Credentials, Tls};
pub use durable::{DurableSettings, KvWrite, WriteAck};
pub use error::BusError;
pub use kv::{Kv, KvChange};
pub use logs::{LogsError, OrderLog, StreamLimits};
pub use placement::{Follower, Placement};
pub use sender::SenderProof;
pub use service::{ApiService, ServiceInfo, SERVICE_NAME};
pub use stats::Stats;
pub use triggers::{Backlog, ConsumerLimits, DeadLetter, TriggerMessage};

use inbound::{decode_publish, encoding_of, json_headers};
use publish::{publish_in_order, Outgoing};

use crate::protocol::{ErrorCode, ErrorReply, Subjects};

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

/// Where and how to answer one request.
#[derive(Debug, Clone)]
pub struct Replier {
    reply: Option<String>,
    encoding: Encoding,
    /// A service endpoint's request, counted in `$SRV.STATS` once
    /// answered (`service.rs`).
    counted: Option<service::Counted>,
    /// The signature of the request, when the answer introduces this bus's
    /// session key, signed over it (`session.rs`).
    introduce: Option<String>,
}

/// A decoded request waiting for its answer.
#[derive(Debug)]
pub struct Request<T> {
    pub body: T,
    pub replier: Replier,
    /// Who signed it (see `auth::trust`), checked when first asked.
    pub sender: SenderProof,
}

/// A decoded publish.
#[derive(Debug)]
pub struct Received<T> {
    pub subject: String,
    pub body: T,
    /// Who signed it (see `auth::trust`), checked when first asked.
    pub sender: SenderProof,
}

/// Who a connection signs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnIdentity {
    /// No nkey (user and password, token, or nothing): it signs nothing.
    NoKey,
    /// It signs, but has no identities to look itself (or anyone) up in.
    NoIdentities,
    /// Its key is not among the identities it trusts.
    Unknown(String),
    Known(crate::auth::Identity),
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
    trust: Option<Arc<sender::TrustSource>>,
    /// Session keys (when it both signs and checks): codes in place of
    /// signatures between buses that know each other.
    sessions: Option<Arc<session::Sessions>>,
    /// The buckets opened on this connection.
    opened: kv::Opened,
    /// The streams `ensure_stream` created or brought up to date on this
    /// connection: once is enough for a process, whose settings do not
    /// change, so a broker taking over again does not ask JetStream again
    /// (a stream whose node died may not answer for seconds).
    ensured: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Bus {
    pub async fn connect(settings: &ConnectSettings, subjects: Subjects) -> Result<Bus, BusError> {
        Bus::connect_counting(settings, subjects, Arc::default()).await
    }

    /// Like [`Bus::connect`], counting into `stats` (a second connection of
    /// a process adds to the same counters as its first).
    pub async fn connect_counting(
        settings: &ConnectSettings,
        subjects: Subjects,
        stats: Arc<Stats>,
    ) -> Result<Bus, BusError> {
        let (client, signer) = connect::connect(settings, stats.clone()).await?;
        let trust = connect::trust(settings)?;
        let (outgoing, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(publish_in_order(client.clone(), queue, stats.clone()));
        let sessions = match (&signer, &trust) {
            (Some(key), Some(_)) => Some(Arc::new(session::Sessions::new(key.public_key()))),
            _ => None,
        };
        Ok(Bus {
            client,
            outgoing,
            subjects,
            stats,
            max_message_bytes: settings.max_message_bytes,
            replicas: settings.replicas,
            signer: signer.map(Arc::new),
            trust: trust.map(Arc::new),
            sessions,
            opened: kv::Opened::default(),
            ensured: Arc::default(),
        })
    }

    /// Whether this bus checks signatures (it has identities to trust).
    pub fn checks_senders(&self) -> bool {
        self.trust.is_some()
    }

    /// Who this connection signs as, as far as its own identities tell.
    pub fn own_identity(&self) -> OwnIdentity {
        let Some(key) = &self.signer else {
            return OwnIdentity::NoKey;
        };
        let Some(trust) = &self.trust else {
            return OwnIdentity::NoIdentities;
        };
        let public_key = key.public_key();
        match trust.identity(&public_key) {
            Some(identity) => OwnIdentity::Known(identity),
            None => OwnIdentity::Unknown(public_key),
        }
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

    /// Whether the connection is up: a request made while it is down waits
    /// in the client and goes out when it reconnects, whether or not its
    /// caller still waits for the answer.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
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
    pub fn reply<T: Serialize + 'static>(&self, replier: &Replier, value: &T) {
        let error = (value as &dyn std::any::Any).downcast_ref::<ErrorReply>();
        // a service request's answer goes by its `respond`, which counts it;
        // a refusal keeps its payload and is counted beside (`service.rs`)
        let request = match (&replier.counted, error) {
            (Some(counted), None) if replier.reply.is_some() => counted.take(),
            (Some(counted), error) => {
                counted.answered(error);
                None
            }
            (None, _) => None,
        };
        let Some(reply) = &replier.reply else {
            debug!("request without reply subject; answer dropped");
            return;
        };
        let payload = Bytes::from(encode(replier.encoding, value));
        let json = (replier.encoding == Encoding::Json).then(json_headers);
        let headers = match replier.introduce.as_deref() {
            Some(request) => self.introduction(reply, &payload, request, json),
            None => json,
        };
        self.enqueue(match request {
            // to the request's own reply subject, the same as `reply`
            Some(request) => Outgoing::Answer {
                request: Box::new(request),
                headers,
                payload,
            },
            None => Outgoing::Message {
                subject: reply.clone(),
                headers,
                payload,
            },
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
                let decoded = decode_publish::<T>(&message, max, || bus.published_by(&message));
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
    /// Fails at once when the server refuses these credentials the bucket's
    /// look-up, rather than after the look-up's retries.
    pub async fn kv<T>(&self, bucket: &str) -> Result<Kv<T>, BusError> {
        let open = Kv::open(
            self.client.clone(),
            &self.opened,
            bucket,
            self.replicas,
            None,
        );
        self.unless_denied(&lookup_subject(bucket), open).await?
    }

    /// A bucket whose values expire `max_age` after they were written (set
    /// when the bucket is created).
    pub async fn kv_expiring<T>(&self, bucket: &str, max_age: Duration) -> Result<Kv<T>, BusError> {
        let opened = &self.opened;
        let open = Kv::open(
            self.client.clone(),
            opened,
            bucket,
            self.replicas,
            Some(max_age),
        );
        self.unless_denied(&lookup_subject(bucket), open).await?
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
        self.decode_counted_request(message, None)
    }

    fn decode_counted_request<T: DeserializeOwned>(
        &self,
        message: Message,
        counted: Option<service::Counted>,
    ) -> Option<Request<T>> {
        let encoding = encoding_of(&message);
        let mut replier = Replier {
            reply: message.reply.as_ref().map(|s| s.to_string()),
            encoding,
            counted,
            introduce: None,
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
                    let (sender, introduce) = match self.arrived(&message) {
                        authn::Arrived::Proof { sender, introduce } => (sender, introduce),
                        authn::Arrived::UnknownSession { binding } => {
                            self.ask_to_sign_again(&replier, &binding);
                            return None;
                        }
                    };
                    replier.introduce = introduce;
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

/// The JetStream API subject a bucket's look-up publishes on.
fn lookup_subject(bucket: &str) -> String {
    format!("$JS.API.STREAM.INFO.KV_{bucket}")
}
