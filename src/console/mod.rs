//! `baton console`: the web console. An HTTP server (actix-web) that serves
//! a small web UI and a plain HTTP JSON API over the cluster's NATS API, on
//! localhost by default.
//!
//! - `api.rs`: the JSON endpoints; each one is one NATS request of the
//!   broker's API (`/api/status` is `api.status`, ...), answered as JSON.
//! - `live.rs`: server-sent events: the order and cluster events from NATS
//!   as they happen (`/api/events`), and one order's log lines, stored and
//!   then followed (`/api/orders/{id}/log?follow=true`).
//! - `http.rs`: the pure rules: a NATS error's HTTP status, the order list's
//!   query, an event's JSON, an SSE frame.
//! - `openapi.rs`: the endpoints as an OpenAPI document (`baton schemas`
//!   writes it to `schemas/console-openapi.json`).
//! - `assets/`: the page, its script and style, embedded in the binary with
//!   `include_str!` (no build step, no JavaScript library).
//!
//! The console is a NATS client like any other, with the `console` role's
//! credentials (`console.nk`): what the broker allows that role is all it
//! can do (orders, job pause, subagent and Scheduler switch-over; never a
//! deploy or the audit trail). It keeps nothing of its own: every page is
//! drawn from the broker's answers and events.

mod api;
mod http;
mod live;
pub mod openapi;

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::{Service as _, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError as _};
use clap::Args;
use futures::future::Either;

use crate::bus::Bus;
use crate::config::Config;
use crate::protocol::{ErrorCode, ErrorReply};

pub use http::{error_status, list_query, sse_frame, OrderQuery};

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Address to serve on; anyone reaching it acts with the console's
    /// credentials, so keep it on localhost or behind your own proxy
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
}

/// What every handler shares.
pub struct Console {
    bus: Bus,
    /// Bound on one NATS request.
    timeout: Duration,
    /// The JetStream stream keeping the log lines.
    log_stream: String,
    /// The events fed to `/api/events`, one JSON text each.
    events: tokio::sync::broadcast::Sender<String>,
}

/// Serves the console on `args.listen` until a stop signal; `bus` is
/// connected with the console's credentials.
pub async fn run(config: &Config, bus: Bus, args: ConsoleArgs) -> anyhow::Result<()> {
    let (events, _) = tokio::sync::broadcast::channel(4096);
    live::feed(&bus, events.clone()).await?;
    let console = web::Data::new(Console {
        bus,
        timeout: config.nats.request_timeout,
        log_stream: config.log_stream(),
        events,
    });
    let loopback = args.listen.ip().is_loopback();
    if !loopback {
        tracing::warn!(
            listen = %args.listen,
            "the console listens beyond this machine and has no login of its own: anyone who \
             reaches it may do what the console role may (submit, cancel, switch subagents and \
             the Scheduler); put a proxy that authenticates people in front of it"
        );
    }
    let server =
        HttpServer::new(move || {
            App::new()
                .wrap_fn(move |req, srv| match refusal(&req, loopback) {
                    None => Either::Left(srv.call(req)),
                    Some(refused) => {
                        let (req, _) = req.into_parts();
                        let answer = ServiceResponse::new(req, refused);
                        Either::Right(futures::future::ready(Ok(answer)))
                    }
                })
                .app_data(console.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(256 * 1024)
                        .error_handler(|e, _| {
                            malformed(format!("the JSON body: {e}"), e.status_code())
                        }),
                )
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    malformed(format!("the query string: {e}"), e.status_code())
                }))
                // before api's `/api/orders/{id}/{action}`, which takes any method
                .configure(live::routes)
                .configure(api::routes)
                .route("/", web::get().to(page))
                .route("/app.js", web::get().to(script))
                .route("/style.css", web::get().to(style))
                .default_service(web::to(not_found))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(args.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let bound = server.addrs();
    let server = server.run();
    let handle = server.handle();
    for addr in &bound {
        // the line `baton dev` and the tests look for
        eprintln!("baton console at http://{addr}/");
    }
    tracing::info!(addr = ?bound, "console serving");
    tokio::select! {
        served = server => served?,
        _ = crate::daemon::wait_for_signal() => handle.stop(true).await,
    }
    Ok(())
}

/// The answer to a request refused before any handler: one naming another
/// host than this machine (DNS rebinding), or an action without a JSON body
/// (another site's form).
fn refusal(req: &ServiceRequest, loopback: bool) -> Option<HttpResponse> {
    let text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if !http::host_allowed(text(header::HOST), loopback) {
        return Some(HttpResponse::Forbidden().json(serde_json::json!({
            "error": {"code": "forbidden", "message": http::OTHER_HOST}
        })));
    }
    if !http::cross_site_safe(req.method().as_str(), text(header::CONTENT_TYPE)) {
        return Some(
            HttpResponse::UnsupportedMediaType().json(serde_json::json!({
                "error": {"code": "bad_request", "message": http::JSON_ONLY}
            })),
        );
    }
    None
}

async fn page() -> HttpResponse {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

async fn script() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

/// A request body or query the handlers cannot read, as a JSON error
/// (`bad_request`) with the status actix chose (400, 413 too large, ...).
fn malformed(message: String, status: StatusCode) -> actix_web::Error {
    let body = ErrorReply::new(ErrorCode::BadRequest, message.clone());
    let answer = HttpResponse::build(status).json(body);
    actix_web::error::InternalError::from_response(message, answer).into()
}

/// An endpoint whose other methods get 405 with a JSON error.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(not_allowed))
}

async fn not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    let message = format!(
        "{} is not a method of {} (see README: Web console)",
        req.method(),
        req.path()
    );
    HttpResponse::MethodNotAllowed().json(ErrorReply::new(ErrorCode::BadRequest, message))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({
        "error": {"code": "not_found", "message": "no such page or endpoint (see README: Web console)"}
    }))
}

#[cfg(test)]
mod tests;
