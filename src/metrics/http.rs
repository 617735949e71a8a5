//! `/metrics` over HTTP (actix-web): one small server per process, one
//! worker, started only when asked (`--metrics-listen`).

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context as _;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

/// A server started by [`serve`]: where it listens.
#[derive(Debug, Clone)]
pub struct Served {
    pub addr: SocketAddr,
}

impl Served {
    /// The URL to scrape.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

/// Serves `registry` on `http://{listen}/metrics` (any other path: 404)
/// from the current actix System, for the rest of the process. Port 0
/// picks a free port: [`Served::addr`] says which.
pub fn serve(listen: SocketAddr, registry: Registry) -> anyhow::Result<Served> {
    let registry = Arc::new(registry);
    let server = HttpServer::new(move || {
        let registry = registry.clone();
        App::new().route(
            "/metrics",
            web::get().to(move || {
                let registry = registry.clone();
                async move { scrape(&registry) }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(listen)
    .with_context(|| {
        format!("cannot serve metrics on {listen} (metrics.listen, --metrics-listen)")
    })?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .context("the metrics server has no address")?;
    actix_rt::spawn(server.run());
    Ok(Served { addr })
}

fn scrape(registry: &Registry) -> HttpResponse {
    let mut text = String::new();
    match prometheus_text::encode(&mut text, registry) {
        Ok(()) => HttpResponse::Ok()
            .content_type(prometheus_text::CONTENT_TYPE)
            .body(text),
        Err(_) => HttpResponse::InternalServerError().body("cannot encode the metrics\n"),
    }
}
