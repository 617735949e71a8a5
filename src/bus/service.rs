//! The active broker's client API as a NATS service (the micro service
//! API, `async_nats::service`), so `nats micro ls|info|stats` find it:
//! `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` (also `.baton` and
//! `.baton.<id>`) answer with the name `baton`, the version, and each
//! endpoint with its subject and the JSON Schemas of its request and reply.
//!
//! The endpoints ARE the API's subscriptions: [`ApiService::serve`] takes
//! the place of [`Bus::serve`] for a client-facing subject, so nothing
//! receives a request twice. Each endpoint subscribes with a queue group
//! of this broker's term alone (`baton-e<epoch>`), not the service API's
//! shared `q`: an active broker frozen past its lease keeps its
//! subscriptions until the server drops it, and in a shared group it would
//! take every other request from the broker that took over; alone in its
//! group, it receives each request as the new one does, which answers.
//! Requests are decoded like any `serve` and answered through the bus's
//! ordered publisher (an order's `accepted` event still precedes its
//! `started`). async-nats counts a request (`num_requests`, `num_errors`,
//! `processing_time`) only in the service API's `respond`, which
//! publishes, so the publisher sends an answer by its request's `respond`
//! ([`Counted::take`]), in its turn. An `ErrorReply` keeps its payload,
//! which `respond` would drop for an error: it is sent as any message, and
//! counted as an error by a `respond` with an empty payload to [`SINK`], a
//! subject nobody listens on ([`Counted::answered`]). `$SRV.STATS` tells
//! the requests answered, and each endpoint's `data.requests` what reached
//! the broker.
//!
//! The service goes with its last [`ApiService`] clone (the Broker and the
//! Elector hold one each), so a broker that steps down stops answering
//! `$SRV.*` as it stops serving the API.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_nats::service::ServiceExt;
use futures::{FutureExt, Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::{Bus, BusError, Request};

/// The service's name in `$SRV.*` answers.
pub const SERVICE_NAME: &str = "baton";

/// Where a [`Counted`] request's empty answer goes: no one subscribes.
pub const SINK: &str = "_INBOX.baton-service-counted";

/// A service request to count in `$SRV.STATS` once the bus has queued its
/// answer; clones share it, and only the first answer counts.
#[derive(Clone)]
pub(super) struct Counted(Arc<Mutex<Option<async_nats::service::Request>>>);

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counted")
    }
}

impl Counted {
    fn new(request: async_nats::service::Request) -> Counted {
        Counted(Arc::new(Mutex::new(Some(request))))
    }

    /// The request, for the answer to be sent by its `respond` (which
    /// counts it); `None` once it was answered.
    pub(super) fn take(&self) -> Option<async_nats::service::Request> {
        self.0.lock().ok().and_then(|mut r| r.take())
    }

    /// The request was answered otherwise: counts it, as an error when
    /// `error` says it was refused.
    pub(super) fn answered(&self, error: Option<&crate::protocol::ErrorReply>) {
        let Some(mut request) = self.take() else {
            return;
        };
        request.message.reply = Some(SINK.into());
        let outcome = match error {
            None => Ok(bytes::Bytes::new()),
            Some(e) => Err(async_nats::service::error::Error {
                status: e.error.message.clone(),
                code: 400,
            }),
        };
        // queued at once unless the client's send buffer is full
        let mut respond = Box::pin(async move {
            let _ = request.respond(outcome).await;
        });
        if (&mut respond).now_or_never().is_none() {
            tokio::spawn(respond);
        }
    }
}

/// What the service says of itself.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub description: String,
    /// A SemVer version: Baton's own.
    pub version: String,
    /// Free-form facts (`prefix`, `broker`, `epoch`).
    pub metadata: BTreeMap<String, String>,
    /// The endpoints' queue group: one of this broker's alone, so a
    /// request reaches every broker serving, not one of them.
    pub queue_group: String,
}

/// The registered service; clones share it.
#[derive(Clone)]
pub struct ApiService {
    inner: Arc<Inner>,
    bus: Bus,
}

struct Inner {
    service: Mutex<Option<async_nats::service::Service>>,
    /// Requests that reached the broker, by endpoint name.
    served: Arc<Mutex<HashMap<String, u64>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let service = self.service.lock().ok().and_then(|mut s| s.take());
        if let Some(service) = service {
            // `stop` only signals and aborts; it never waits
            let _ = service.stop().now_or_never();
        }
    }
}

impl Bus {
    /// Registers the service (its `$SRV.*` answers); add endpoints with
    /// [`ApiService::serve`].
    pub async fn service(&self, info: ServiceInfo) -> Result<ApiService, BusError> {
        let served: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let counts = served.clone();
        let metadata: HashMap<String, String> = info.metadata.into_iter().collect();
        let service = self
            .client
            .service_builder()
            .description(info.description)
            .metadata(metadata)
            .queue_group(info.queue_group)
            .stats_handler(move |endpoint, _| {
                let n = counts
                    .lock()
                    .map(|c| c.get(&endpoint).copied().unwrap_or(0))
                    .unwrap_or(0);
                serde_json::json!({ "requests": n })
            })
            .start(SERVICE_NAME, info.version)
            .await
            .map_err(|e| BusError::Transport {
                subject: "$SRV.>".into(),
                reason: e.to_string(),
            })?;
        Ok(ApiService {
            inner: Arc::new(Inner {
                service: Mutex::new(Some(service)),
                served,
            }),
            bus: self.clone(),
        })
    }
}

/// A type's own name (`SubmitOrder`), as its schema in `schemas/` is named.
fn short_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// An endpoint's metadata: its request and reply types and their schemas.
pub fn endpoint_metadata(request: &str, reply: &str) -> HashMap<String, String> {
    HashMap::from([
        ("request".to_string(), request.to_string()),
        ("reply".to_string(), reply.to_string()),
        (
            "request_schema".to_string(),
            format!("schemas/{request}.json"),
        ),
        ("reply_schema".to_string(), format!("schemas/{reply}.json")),
        (
            "encoding".to_string(),
            "MessagePack map; JSON with the header Content-Type: application/json".to_string(),
        ),
    ])
}

impl ApiService {
    /// Serves requests of type `T` (answered with `R`, or an error) on
    /// `subject` as the endpoint `name`: a stream like [`Bus::serve`]'s.
    pub async fn serve<T, R>(
        &self,
        name: &str,
        subject: String,
    ) -> Result<impl Stream<Item = Request<T>> + Unpin + 'static, BusError>
    where
        T: DeserializeOwned + 'static,
    {
        let builder = {
            let service = self.inner.service.lock().unwrap_or_else(|e| e.into_inner());
            let service = service.as_ref().ok_or_else(|| BusError::Transport {
                subject: subject.clone(),
                reason: "the service has stopped".into(),
            })?;
            service
                .endpoint_builder()
                .name(name)
                .metadata(endpoint_metadata(short_name::<T>(), short_name::<R>()))
        };
        let endpoint = builder
            .add(subject.clone())
            .await
            .map_err(|e| BusError::Transport {
                subject: subject.clone(),
                reason: e.to_string(),
            })?;
        let bus = self.bus.clone();
        let served = self.inner.served.clone();
        let name = name.to_string();
        // the endpoint holds the service's state alive only through us
        let keep = self.inner.clone();
        Ok(endpoint
            .filter_map(move |request| {
                let _ = &keep;
                if let Ok(mut served) = served.lock() {
                    match served.get_mut(&name) {
                        Some(n) => *n += 1,
                        None => _ = served.insert(name.clone(), 1),
                    }
                }
                let message = request.message.clone();
                let counted = Counted::new(request);
                futures::future::ready(bus.decode_counted_request(message, Some(counted)))
            })
            .boxed_local())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_names_its_types_and_their_schemas() {
        struct SubmitOrder;
        assert_eq!(short_name::<SubmitOrder>(), "SubmitOrder");
        let m = endpoint_metadata("SubmitOrder", "SubmitReply");
        assert_eq!(m["request_schema"], "schemas/SubmitOrder.json");
        assert_eq!(m["reply_schema"], "schemas/SubmitReply.json");
    }
}
