//! Live updates as server-sent events: `/api/events` passes on the order
//! and cluster events from NATS (one subscription per console, shared by
//! every page through a broadcast channel); `/api/orders/{id}/log` reads an
//! order's lines from the log stream, and with `follow=true` goes on until
//! the order's `finished` event.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures::stream::{LocalBoxStream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::http::{event_json, sse_frame};
use super::Console;
use crate::bus::{Bus, LogsError, OrderLog};
use crate::protocol::{EventKind, GetOrder, OrderInfo};

/// How often an idle event stream sends a comment, so a closed page is noticed.
const KEEPALIVE: Duration = Duration::from_secs(10);

pub fn routes(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/api/events").route(web::get().to(events)))
        .service(resource("/api/orders/{id}/log").route(web::get().to(log)));
}

/// Subscribes to the events the pages show and forwards each, as JSON, to
/// `sender`, from a task of its own for as long as the connection lives.
pub async fn feed(bus: &Bus, sender: broadcast::Sender<String>) -> anyhow::Result<()> {
    let s = bus.subjects().clone();
    let mut subjects = vec![format!("{}.cluster.>", s.prefix())];
    for kind in [EventKind::Accepted, EventKind::Changed, EventKind::Finished] {
        subjects.push(s.event("*", "*", kind));
    }
    subjects.push(s.task_events("*", "*", EventKind::Started));
    let mut merged = futures::stream::SelectAll::new();
    for subject in subjects {
        merged.push(bus.listen_raw(subject).await?.boxed_local());
    }
    actix_rt::spawn(async move {
        while let Some((subject, payload)) = merged.next().await {
            if let Some(event) = event_json(&s, &subject, &payload) {
                // no page open: nobody to tell
                let _ = sender.send(event.to_string());
            }
        }
        tracing::warn!("console event subscriptions ended");
    });
    Ok(())
}

/// A stream of SSE frames that also sends a comment every [`KEEPALIVE`].
fn sse(frames: LocalBoxStream<'static, String>) -> HttpResponse {
    let ticks = futures::stream::unfold((), |()| async {
        tokio::time::sleep(KEEPALIVE).await;
        Some((": keepalive\n\n".to_string(), ()))
    });
    // ends with `frames`, not with the ticks
    let frames = frames
        .map(Some)
        .chain(futures::stream::once(async { None }));
    let merged = futures::stream::select(frames, ticks.map(Some))
        .take_while(|f| futures::future::ready(f.is_some()))
        .map(|f| Ok::<_, actix_web::Error>(Bytes::from(f.unwrap_or_default())));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(merged)
}

/// `GET /api/events`: every order and cluster event from now on, as
/// `message` events with JSON data (`http::event_json`); `lagged` when
/// this page fell behind and should read everything again.
async fn events(c: web::Data<Console>) -> HttpResponse {
    let receiver = c.events.subscribe();
    let hello = sse_frame("hello", "{}");
    let frames = futures::stream::unfold(receiver, |mut receiver| async move {
        let frame = match receiver.recv().await {
            Ok(json) => sse_frame("message", &json),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                sse_frame("lagged", &format!("{{\"missed\":{n}}}"))
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((frame, receiver))
    });
    sse(futures::stream::once(async { hello })
        .chain(frames)
        .boxed_local())
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

/// `GET /api/orders/{id}/log`: the order's stored lines as JSON (`{"lines":
/// [...], "finished": ...}`); with `follow=true` as server-sent events
/// instead (`line`, then `finished`), followed until the order finishes.
/// A step order's lines are its workflow order's lines of that step.
async fn log(
    c: web::Data<Console>,
    id: web::Path<String>,
    q: web::Query<LogQuery>,
) -> HttpResponse {
    let get = GetOrder {
        order_id: id.into_inner(),
    };
    // the broker knows the order (a short id is resolved to the whole one),
    // or the answer is its refusal: no empty log, no follow that never ends
    let info = c
        .bus
        .request::<_, OrderInfo>(c.bus.subjects().order_get(), &get, c.timeout)
        .await;
    let info = match info {
        Ok(info) => info,
        Err(e) => return super::api::refused(&e),
    };
    let order_id = info.order_id.clone();
    // a step order's lines are stored under its workflow order
    let (read_id, step) = match info.parent {
        Some(p) => (p.order_id, Some(p.step)),
        None => (order_id.clone(), None),
    };
    let lines = match c.bus.order_logs(&c.log_stream, &read_id, q.follow).await {
        Ok(lines) => lines,
        Err(LogsError::NoStream { stream }) => {
            return HttpResponse::NotFound().json(serde_json::json!({
                "error": {"code": "not_found", "message": format!("no log stream {stream} yet")}
            }))
        }
        Err(LogsError::Bus(e)) => {
            let (status, body) = super::http::error_status(&e);
            let status = actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
            return HttpResponse::build(status).json(body);
        }
    };
    // a step order's stream is its workflow order's: it ends with that one
    let ours = move |item: &OrderLog| match item {
        OrderLog::Line(line) => step.is_none() || line.step == step,
        OrderLog::Finished(f) => f.order_id == order_id || f.order_id == read_id,
    };
    let lines =
        lines.filter_map(move |item| futures::future::ready(item.ok().filter(|item| ours(item))));
    if !q.follow {
        let items: Vec<OrderLog> = lines.collect().await;
        let mut out = Vec::new();
        let mut finished = None;
        for item in items {
            match item {
                OrderLog::Line(line) => out.push(line),
                OrderLog::Finished(f) => finished = Some(f),
            }
        }
        return HttpResponse::Ok().json(serde_json::json!({"lines": out, "finished": finished}));
    }
    // ends with the order's `finished` event
    let start = (lines.boxed_local(), false);
    let frames = futures::stream::unfold(start, |(mut lines, done)| async move {
        if done {
            return None;
        }
        let (frame, last) = match lines.next().await? {
            OrderLog::Line(line) => (sse_frame("line", &json(&line)), false),
            OrderLog::Finished(f) => (sse_frame("finished", &json(&f)), true),
        };
        Some((frame, (lines, last)))
    })
    .boxed_local();
    sse(futures::stream::once(async { sse_frame("hello", "{}") })
        .chain(frames)
        .boxed_local())
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}
