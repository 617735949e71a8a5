//! A webhook's URL (pure): checked at load, split into what a POST needs,
//! and shown without its secrets. A URL may carry a secret in its user
//! info or its query (`?token=...`); neither is ever logged nor put in an
//! error message.

use base64::Engine;
use hyper::Uri;

/// Where and how to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, as sent in the request line.
    pub path_and_query: String,
    /// `Basic ...` from the URL's user info, if any.
    pub authorization: Option<String>,
}

/// Checks a webhook URL: `http://` or `https://` with a host. The reason
/// never repeats the URL.
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    endpoint(url).map(|_| ())
}

/// The endpoint of `url`.
pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}); write it as https://host[:port]/path"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the URL must start with http:// or https://".into()),
    };
    let authority = uri
        .authority()
        .ok_or("the URL names no host; write it as https://host[:port]/path")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err("the URL names no host; write it as https://host[:port]/path".into());
    }
    let authorization = authority.as_str().rsplit_once('@').map(|(user_info, _)| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_info);
        format!("Basic {encoded}")
    });
    Ok(Endpoint {
        tls,
        host: host.to_string(),
        port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path_and_query: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into()),
        authorization,
    })
}

/// `url` without user info, query or fragment: safe to show.
pub fn redacted(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(uri) => {
            let scheme = uri.scheme_str().unwrap_or("?");
            let host = uri.authority().map(|a| {
                let hostport = a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h);
                hostport.to_string()
            });
            format!("{scheme}://{}{}", host.unwrap_or_default(), uri.path())
        }
        Err(_) => "(an unreadable URL)".into(),
    }
}
