//! Typed JetStream key-value buckets: MessagePack values keyed by string.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tracing::warn;

use super::{decode, encode, BusError, Encoding};

/// [`Kv::entries`] gives up when the server sends nothing for this long.
const ENTRIES_IDLE: Duration = Duration::from_secs(10);
/// [`Kv::entries`] lets other tasks run after every so many entries.
const ENTRIES_YIELD: u64 = 1_000;
/// How long [`Kv::entries`] waits for a new watch's first entry before it
/// starts another: on a cluster, a watch made while a node rejoins or a
/// stream elects its leader can stay silent until its consumer is remade
/// (about 10 s), where a new one answers at once.
const FIRST_ENTRY: Duration = Duration::from_secs(1);
/// Watches [`Kv::entries`] starts before waiting [`ENTRIES_IDLE`] for one.
const WATCH_ATTEMPTS: u32 = 4;

/// How long one look-up of a bucket may take before it is tried again: a
/// stream electing its leader answers nothing, and the client's own
/// timeout (5 s) would make every look-up wait it out.
const LOOKUP_TRY: Duration = Duration::from_secs(1);
/// Look-ups of a bucket tried before giving up.
const LOOKUP_ATTEMPTS: u32 = 15;

/// Opens `bucket`, creating it as `config` says when it does not exist:
/// each look-up bounded by [`LOOKUP_TRY`] and tried again, so a bucket
/// whose stream elects a leader opens as soon as it has one.
async fn open_or_create(
    js: &jetstream::Context,
    bucket: &str,
    config: kv::Config,
) -> Result<kv::Store, BusError> {
    let mut last = String::from("timed out");
    for _ in 0..LOOKUP_ATTEMPTS {
        match tokio::time::timeout(LOOKUP_TRY, js.get_key_value(bucket)).await {
            Ok(Ok(store)) => return Ok(store),
            Err(_) => {
                tracing::debug!(bucket, "bucket look-up timed out; trying again");
                continue;
            }
            // not found, or not answered: creating it says which
            Ok(Err(e)) => tracing::debug!(bucket, error = %e, "bucket look-up failed; creating it"),
        }
        match tokio::time::timeout(LOOKUP_TRY, js.create_key_value(config.clone())).await {
            Ok(Ok(store)) => return Ok(store),
            // another process may have created it in between: look again
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tracing::debug!(bucket, error = %last, "bucket not created; looking again");
    }
    Err(transport(bucket, last))
}

/// One bucket whose values are `T`.
pub struct Kv<T> {
    /// Shared: a `kv::Store` carries its stream's whole configuration, and
    /// every journal write clones the handle.
    store: Arc<kv::Store>,
    bucket: String,
    _values: PhantomData<fn() -> T>,
}

impl<T> Clone for Kv<T> {
    fn clone(&self) -> Self {
        Kv {
            store: self.store.clone(),
            bucket: self.bucket.clone(),
            _values: PhantomData,
        }
    }
}

/// A change seen by [`Kv::watch`]: a new value, or `None` when the key was deleted.
#[derive(Debug)]
pub struct KvChange<T> {
    pub key: String,
    pub value: Option<T>,
    pub revision: u64,
    /// When the server stored this change (Unix ms).
    pub written_ms: u64,
}

/// The buckets a connection has opened, by name: opened once per process,
/// so a broker that steps down and takes over again (after a JetStream
/// node died, say) does not look each bucket up again. A look-up right
/// after a stream elected its leader can go unanswered for a second or two
/// ([`LOOKUP_TRY`]); a handle already opened needs no look-up, as it only
/// names the stream its requests go to.
#[derive(Clone, Default)]
pub(super) struct Opened(Arc<std::sync::Mutex<HashMap<String, Arc<kv::Store>>>>);

impl Opened {
    fn get(&self, bucket: &str) -> Option<Arc<kv::Store>> {
        let opened = self.0.lock().unwrap_or_else(|e| e.into_inner());
        opened.get(bucket).cloned()
    }

    fn keep(&self, bucket: &str, store: Arc<kv::Store>) {
        let mut opened = self.0.lock().unwrap_or_else(|e| e.into_inner());
        opened.insert(bucket.to_string(), store);
    }
}

impl<T> Kv<T> {
    /// `bucket`, from `opened` when this connection opened it before, else
    /// looked up (created when missing) and kept there.
    pub(super) async fn open(
        client: async_nats::Client,
        opened: &Opened,
        bucket: &str,
        replicas: usize,
        max_age: Option<Duration>,
    ) -> Result<Kv<T>, BusError> {
        if let Some(store) = opened.get(bucket) {
            return Ok(Kv {
                store,
                bucket: bucket.to_string(),
                _values: PhantomData,
            });
        }
        let js = jetstream::new(client);
        let config = kv::Config {
            bucket: bucket.to_string(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            max_age: max_age.unwrap_or_default(),
            ..Default::default()
        };
        let store = Arc::new(open_or_create(&js, bucket, config).await?);
        opened.keep(bucket, store.clone());
        Ok(Kv {
            store,
            bucket: bucket.to_string(),
            _values: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned> Kv<T> {
    /// Stores `value` under `key`; returns once JetStream has it.
    pub async fn put(&self, key: &str, value: &T) -> Result<u64, BusError> {
        let bytes = Bytes::from(encode(Encoding::MessagePack, value));
        self.store
            .put(key, bytes)
            .await
            .map_err(|e| transport(&self.bucket, e))
    }

    /// Stores `value` under `key` only if the key holds nothing: `Ok(false)`
    /// when it already existed. Atomic in JetStream, so of two processes
    /// creating the same key exactly one succeeds.
    pub async fn create(&self, key: &str, value: &T) -> Result<bool, BusError> {
        let bytes = Bytes::from(encode(Encoding::MessagePack, value));
        match self.store.create(key, bytes).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(transport(&self.bucket, e)),
        }
    }

    /// Like [`Kv::create`], returning the new revision, or `None` when the
    /// key already holds a value.
    pub async fn create_revision(&self, key: &str, value: &T) -> Result<Option<u64>, BusError> {
        let bytes = Bytes::from(encode(Encoding::MessagePack, value));
        match self.store.create(key, bytes).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(transport(&self.bucket, e)),
        }
    }

    /// Stores `value` under `key` only if the key's latest revision is
    /// `revision` (compare-and-swap); the new revision, or `None` when
    /// someone else wrote the key since.
    pub async fn update(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<Option<u64>, BusError> {
        let bytes = Bytes::from(encode(Encoding::MessagePack, value));
        match self.store.update(key, bytes, revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(transport(&self.bucket, e)),
        }
    }

    /// Deletes `key`, whatever it holds.
    pub async fn delete(&self, key: &str) -> Result<(), BusError> {
        self.store
            .delete(key)
            .await
            .map_err(|e| transport(&self.bucket, e))
    }

    /// Deletes `key` if its latest revision is still `revision`.
    pub async fn delete_if(&self, key: &str, revision: u64) -> Result<(), BusError> {
        self.store
            .delete_expect_revision(key, Some(revision))
            .await
            .map_err(|e| transport(&self.bucket, e))
    }

    /// Removes `key`'s record if its latest revision is still `revision`,
    /// leaving no delete marker behind: a purge of the key's messages up
    /// to that revision (a record written since has a later one and
    /// stays). For buckets keeping one revision per key.
    pub async fn remove_if(&self, key: &str, revision: u64) -> Result<(), BusError> {
        let subject = format!("$KV.{}.{key}", self.bucket);
        self.store
            .stream
            .purge()
            .filter(subject)
            .sequence(revision + 1)
            .await
            .map(|_| ())
            .map_err(|e| transport(&self.bucket, e))
    }

    pub async fn get(&self, key: &str) -> Result<Option<T>, BusError> {
        let Some(bytes) = self
            .store
            .get(key)
            .await
            .map_err(|e| transport(&self.bucket, e))?
        else {
            return Ok(None);
        };
        self.decode_value(key, &bytes).map(Some)
    }

    /// The key's current value and its revision (for a later
    /// [`Kv::update`]); `None` when it holds nothing or was deleted.
    pub async fn get_with_revision(&self, key: &str) -> Result<Option<(T, u64)>, BusError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| transport(&self.bucket, e))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let value = self.decode_value(key, &entry.value)?;
                Ok(Some((value, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    fn decode_value(&self, key: &str, bytes: &[u8]) -> Result<T, BusError> {
        decode(Encoding::MessagePack, bytes).map_err(|source| BusError::Decode {
            subject: format!("kv {}/{key}", self.bucket),
            source,
        })
    }

    /// Every key's current value, then every change as it happens.
    /// Values that cannot be decoded are skipped with a warning.
    pub async fn watch(&self) -> Result<impl Stream<Item = KvChange<T>> + Unpin + 'static, BusError>
    where
        T: 'static,
    {
        let watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| transport(&self.bucket, e))?;
        let bucket = self.bucket.clone();
        Ok(watch
            .filter_map(move |entry| {
                let change = match entry {
                    Ok(entry) => change_of(&bucket, entry),
                    Err(e) => {
                        warn!(%bucket, error = %e, "kv watch error");
                        None
                    }
                };
                futures::future::ready(change)
            })
            .boxed_local())
    }

    /// Every key's current value, read once through one consumer (not one
    /// request per key, so 100,000 keys take moments). Deleted keys are
    /// absent; values that cannot be decoded are skipped with a warning.
    pub async fn entries(&self) -> Result<HashMap<String, T>, BusError> {
        let entries = self.entries_with_revisions().await?.into_iter();
        Ok(entries.map(|(key, (value, _))| (key, value)).collect())
    }

    /// Like [`Kv::entries`], with each value's revision (for a later
    /// [`Kv::update`]).
    pub async fn entries_with_revisions(&self) -> Result<HashMap<String, (T, u64)>, BusError> {
        let mut values = HashMap::new();
        let messages = self.messages().await?;
        if messages == 0 {
            return Ok(values);
        }
        // the watch delivers the last entry of every key, each saying how
        // many are still to come
        let (mut watch, first) = self.first_entry().await?;
        let mut next = Some(first);
        let mut read = 0u64;
        loop {
            // the thread's timers and other tasks run between batches
            read += 1;
            if read % ENTRIES_YIELD == 0 {
                tokio::task::yield_now().await;
            }
            let entry = match next.take() {
                Some(entry) => entry,
                None => match tokio::time::timeout(ENTRIES_IDLE, watch.next()).await {
                    Ok(Some(Ok(entry))) => entry,
                    Ok(Some(Err(e))) => return Err(transport(&self.bucket, e)),
                    Ok(None) => return Err(transport(&self.bucket, "the watch ended early")),
                    Err(_) => {
                        return Err(BusError::TimedOut {
                            subject: format!("kv {}", self.bucket),
                            timeout: ENTRIES_IDLE,
                        })
                    }
                },
            };
            let last = entry.delta == 0;
            if let Some(change) = change_of::<T>(&self.bucket, entry) {
                match change.value {
                    Some(value) => values.insert(change.key, (value, change.revision)),
                    None => values.remove(&change.key),
                };
            }
            if last {
                return Ok(values);
            }
        }
    }
}

impl<T> Kv<T> {
    /// How many messages the bucket's stream holds, asked again after
    /// [`LOOKUP_TRY`] without an answer (a stream electing its leader).
    async fn messages(&self) -> Result<u64, BusError> {
        let mut last = String::from("timed out");
        for _ in 0..LOOKUP_ATTEMPTS {
            let mut stream = self.store.stream.clone();
            match tokio::time::timeout(LOOKUP_TRY, stream.info()).await {
                Ok(Ok(info)) => return Ok(info.state.messages),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => {}
            }
        }
        Err(transport(&self.bucket, last))
    }

    /// A watch of every key with history, and its first entry: a watch
    /// silent for [`FIRST_ENTRY`] is dropped for a new one, up to
    /// [`WATCH_ATTEMPTS`] times; the last is waited for [`ENTRIES_IDLE`].
    async fn first_entry(&self) -> Result<(kv::Watch, kv::Entry), BusError> {
        for attempt in 1..=WATCH_ATTEMPTS {
            let mut watch = (self.store.watch_with_history(">").await)
                .map_err(|e| transport(&self.bucket, e))?;
            let wait = if attempt == WATCH_ATTEMPTS {
                ENTRIES_IDLE
            } else {
                FIRST_ENTRY
            };
            match tokio::time::timeout(wait, watch.next()).await {
                Ok(Some(Ok(entry))) => return Ok((watch, entry)),
                Ok(Some(Err(e))) => return Err(transport(&self.bucket, e)),
                Ok(None) => return Err(transport(&self.bucket, "the watch ended early")),
                Err(_) => {
                    warn!(bucket = %self.bucket, attempt, "reading the bucket: its watch is silent; starting another")
                }
            }
        }
        Err(BusError::TimedOut {
            subject: format!("kv {}", self.bucket),
            timeout: ENTRIES_IDLE,
        })
    }
}

impl<T: Serialize + DeserializeOwned> Kv<T> {
    /// The records last written before `cutoff_ms` (wall clock), oldest
    /// first, at most `most` of them, each with its revision: what a
    /// sweep of old records reads, and no more.
    pub async fn written_before(
        &self,
        cutoff_ms: u64,
        most: usize,
    ) -> Result<Vec<(String, T, u64)>, BusError> {
        let mut found = Vec::new();
        let mut stream = self.store.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| transport(&self.bucket, e))?;
        if info.state.messages == 0 {
            return Ok(found);
        }
        let mut watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| transport(&self.bucket, e))?;
        while found.len() < most {
            let entry = match tokio::time::timeout(ENTRIES_IDLE, watch.next()).await {
                Ok(Some(Ok(entry))) => entry,
                Ok(Some(Err(e))) => return Err(transport(&self.bucket, e)),
                Ok(None) => break,
                Err(_) => {
                    return Err(BusError::TimedOut {
                        subject: format!("kv {}", self.bucket),
                        timeout: ENTRIES_IDLE,
                    })
                }
            };
            let written_ms = (entry.created.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
            if written_ms >= cutoff_ms {
                break;
            }
            let last = entry.delta == 0;
            if let Some(KvChange {
                key,
                value: Some(value),
                revision,
                ..
            }) = change_of::<T>(&self.bucket, entry)
            {
                found.push((key, value, revision));
            }
            if last {
                break;
            }
        }
        Ok(found)
    }
}

/// A watched entry as a typed change; `None` when its value cannot be decoded.
fn change_of<T: DeserializeOwned>(bucket: &str, entry: kv::Entry) -> Option<KvChange<T>> {
    let written_ms = u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    match entry.operation {
        kv::Operation::Put => match decode::<T>(Encoding::MessagePack, &entry.value) {
            Ok(value) => Some(KvChange {
                key: entry.key,
                value: Some(value),
                revision: entry.revision,
                written_ms,
            }),
            Err(e) => {
                warn!(%bucket, key = %entry.key, error = %e, "undecodable kv value skipped");
                None
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => Some(KvChange {
            key: entry.key,
            value: None,
            revision: entry.revision,
            written_ms,
        }),
    }
}

fn transport(bucket: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Transport {
        subject: format!("kv {bucket}"),
        reason: e.to_string(),
    }
}
