//! One webhook target: an HTTP/1.1 POST of a JSON body over a new
//! connection (TLS for `https://`, with the system's root certificates),
//! bounded by the target's timeout, connecting included. Its errors never
//! name the URL or a header value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use super::retry::Tried;
use super::url::{endpoint, Endpoint};
use crate::config::Secret;

/// A webhook, ready to POST to.
pub struct Webhook {
    endpoint: Endpoint,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    tls: Option<TlsConnector>,
}

impl Webhook {
    /// The reason never repeats the URL or a header value.
    pub fn new(
        url: &Secret,
        headers: &BTreeMap<String, Secret>,
        timeout: Duration,
    ) -> Result<Webhook, String> {
        let endpoint = endpoint(url.expose())?;
        let mut list = Vec::new();
        for (name, value) in headers {
            let header = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("header {name:?} is no HTTP header name"))?;
            let mut value = HeaderValue::try_from(value.expose())
                .map_err(|_| format!("the value of header {name} is no HTTP header value"))?;
            value.set_sensitive(true);
            list.push((header, value));
        }
        let tls = endpoint.tls.then(tls_connector).transpose()?;
        Ok(Webhook {
            endpoint,
            headers: list,
            timeout,
            tls,
        })
    }

    /// POSTs `body` once.
    pub async fn post(&self, body: Bytes) -> Tried {
        match tokio::time::timeout(self.timeout, self.send(body)).await {
            Err(_) => Tried::NoAnswer(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            )),
            Ok(Ok(status)) if (200..300).contains(&status) => Tried::Delivered,
            Ok(Ok(status)) => Tried::Status(status),
            Ok(Err(e)) => Tried::NoAnswer(e),
        }
    }

    fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let e = &self.endpoint;
        let default_port = if e.tls { 443 } else { 80 };
        let host = if e.port == default_port {
            e.host.clone()
        } else {
            format!("{}:{}", e.host, e.port)
        };
        let mut request = Request::post(e.path_and_query.as_str())
            .header(HOST, host)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("baton/", env!("CARGO_PKG_VERSION")));
        if let Some(basic) = &e.authorization {
            request = request.header(AUTHORIZATION, basic.as_str());
        }
        let mut request = request
            .body(Full::new(body))
            .map_err(|_| "cannot build the request".to_string())?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        Ok(request)
    }

    async fn send(&self, body: Bytes) -> Result<u16, String> {
        let request = self.request(body)?;
        let e = &self.endpoint;
        let tcp = TcpStream::connect((e.host.as_str(), e.port))
            .await
            .map_err(|err| format!("cannot connect: {err}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => exchange(TokioIo::new(tcp), request).await,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(e.host.clone())
                    .map_err(|_| "the host is no TLS server name".to_string())?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|err| format!("TLS: {err}"))?;
                exchange(TokioIo::new(stream), request).await
            }
        }
    }
}

/// Sends `request` over `io` and returns the answer's status.
async fn exchange<I>(io: I, request: Request<Full<Bytes>>) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(connection);
    let answer = sender.send_request(request).await;
    driver.abort();
    answer
        .map(|response| response.status().as_u16())
        .map_err(|e| format!("HTTP: {e}"))
}

fn tls_connector() -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
