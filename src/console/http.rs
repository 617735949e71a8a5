//! The console's pure rules: which HTTP status a NATS answer gets, the
//! order list's query and its pages, an event as JSON, an SSE frame.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::bus::BusError;
use crate::protocol::{
    ErrorCode, ErrorReply, EventKind, ListOrders, OrderState, OrderSummary, Subjects,
};

/// Most orders on one page of `/api/orders`.
pub const MAX_PAGE: u32 = 1000;
/// Orders on a page when the query names no `limit`.
pub const DEFAULT_PAGE: u32 = 50;
/// The broker lists at most this many orders in one answer.
const MAX_LIST: u32 = 10_000;

/// The HTTP status and JSON body of a failed NATS request: the broker's own
/// refusal keeps its code; the bus's failures say what failed.
pub fn error_status(e: &BusError) -> (u16, ErrorReply) {
    let status = match e {
        BusError::Remote(reply) => match reply.error.code {
            ErrorCode::BadRequest
            | ErrorCode::TooLarge
            | ErrorCode::InvalidParam
            | ErrorCode::InvalidJob => 400,
            ErrorCode::UnknownJob | ErrorCode::NotFound => 404,
            ErrorCode::InvalidState | ErrorCode::Conflict => 409,
            ErrorCode::Forbidden => 403,
            ErrorCode::Busy | ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        },
        BusError::Denied { .. } => 403,
        BusError::NoResponders { .. } => 503,
        BusError::TimedOut { .. } => 504,
        BusError::Connect { .. } | BusError::Decode { .. } | BusError::Transport { .. } => 502,
    };
    let reply = match e {
        BusError::Remote(reply) => reply.clone(),
        BusError::Denied { .. } => ErrorReply::new(ErrorCode::Forbidden, e.to_string()),
        _ => ErrorReply::new(ErrorCode::Unavailable, e.to_string()),
    };
    (status, reply)
}

/// The query of `GET /api/orders`: the filters of `api.order.list`, a page
/// size, and where the page starts (`after`, from the previous page's `next`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OrderQuery {
    pub job: Option<String>,
    pub workflow: Option<String>,
    pub state: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    #[serde(default)]
    pub steps: bool,
    pub limit: Option<u32>,
    pub after: Option<String>,
}

/// Where a page of orders starts: after the first `skip` orders accepted at
/// `ms` (newest first), so orders accepted in the same millisecond are
/// neither skipped nor shown twice. Written `MS.SKIP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub ms: u64,
    pub skip: u32,
}

impl Cursor {
    pub fn parse(text: &str) -> Option<Cursor> {
        let (ms, skip) = text.split_once('.')?;
        Some(Cursor {
            ms: ms.parse().ok()?,
            skip: skip.parse().ok()?,
        })
    }

    pub fn text(&self) -> String {
        format!("{}.{}", self.ms, self.skip)
    }
}

/// One page's request: what to ask the broker, how many of its first
/// orders to leave out, and the page size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub list: ListOrders,
    pub skip: u32,
    pub page: u32,
    pub after: Option<Cursor>,
}

/// Turns the query into the broker's request; a bad value is an error
/// naming it.
pub fn list_query(q: &OrderQuery) -> Result<PageRequest, String> {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<OrderState>(Value::String(s.to_string())).map_err(|_| {
                format!(
                    "state {s:?}: use accepted, running, succeeded, failed, cancelled, \
                     suspending, suspended or cancelling"
                )
            })?,
        ),
    };
    let page = q.limit.unwrap_or(DEFAULT_PAGE);
    if page == 0 || page > MAX_PAGE {
        return Err(format!("limit {page}: use 1 to {MAX_PAGE}"));
    }
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(Cursor::parse(a).ok_or_else(|| {
            format!("after {a:?}: use the `next` of the previous page (MS.SKIP)")
        })?),
    };
    let skip = after.map_or(0, |c| c.skip);
    if skip >= MAX_LIST - page {
        return Err(format!(
            "after {}: more orders than {MAX_LIST} in one millisecond",
            after.map(|c| c.text()).unwrap_or_default()
        ));
    }
    let empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let until_ms = match (after, q.until_ms) {
        (Some(c), Some(u)) => Some((c.ms + 1).min(u)),
        (Some(c), None) => Some(c.ms + 1),
        (None, u) => u,
    };
    Ok(PageRequest {
        list: ListOrders {
            workflow: empty(&q.workflow),
            job: empty(&q.job),
            state,
            since_ms: q.since_ms,
            until_ms,
            steps: q.steps,
            // one more than the page: tells whether there is a next one
            limit: Some(skip + page + 1),
        },
        skip,
        page,
        after,
    })
}

/// A page of orders cut from the broker's answer, and the cursor of the
/// next page (`None` on the last).
pub fn cut_page(
    request: &PageRequest,
    orders: Vec<OrderSummary>,
    truncated: bool,
) -> (Vec<OrderSummary>, Option<Cursor>) {
    let mut rest: Vec<OrderSummary> = orders.into_iter().skip(request.skip as usize).collect();
    let more = rest.len() > request.page as usize || truncated;
    rest.truncate(request.page as usize);
    let next = match rest.last() {
        Some(last) if more => {
            let ms = last.accepted_at_ms;
            let mut skip = rest.iter().filter(|o| o.accepted_at_ms == ms).count() as u32;
            if let Some(after) = request.after.filter(|a| a.ms == ms) {
                skip += after.skip;
            }
            Some(Cursor { ms, skip })
        }
        _ => None,
    };
    (rest, next)
}

/// A NATS event as the console's event feed sends it: `{"type": "order",
/// "kind", "job", "order", "data"}` for an order's events, `{"type":
/// "subagent" | "agent" | "broker" | "scheduler", "data"}` for the
/// cluster's. Log lines are left out (an order's page follows its own), and
/// so is a task event naming another publisher than its subject.
pub fn event_json(subjects: &Subjects, subject: &str, payload: &[u8]) -> Option<Value> {
    let data: Value = rmp_serde::from_slice(payload).ok()?;
    if let Some((job, order, kind)) = subjects.parse_event(subject) {
        if kind == EventKind::Log {
            return None;
        }
        let claimed = data.get("subagent_id").and_then(Value::as_str);
        if kind == EventKind::Started
            && !claimed.is_some_and(|c| subjects.publisher_matches(subject, c))
        {
            return None;
        }
        return Some(json!({
            "type": "order", "kind": kind.token(), "job": job, "order": order, "data": data,
        }));
    }
    let cluster = format!("{}.cluster.", subjects.prefix());
    let rest = subject.strip_prefix(&cluster)?;
    let kind = match rest.split('.').next()? {
        kind @ ("subagent" | "agent" | "broker" | "scheduler") => kind,
        _ => return None,
    };
    Some(json!({"type": kind, "data": data}))
}

/// One server-sent event: its name and data (each line of it a `data:` line).
pub fn sse_frame(event: &str, data: &str) -> String {
    let mut frame = format!("event: {event}\n");
    for line in data.split('\n') {
        frame.push_str("data: ");
        frame.push_str(line.trim_end_matches('\r'));
        frame.push('\n');
    }
    frame.push('\n');
    frame
}

/// Why a request naming another host is refused.
pub const OTHER_HOST: &str = "this console answers only to localhost or a loopback address \
    (--listen on another address to serve other names)";

/// Why a POST without a JSON body is refused.
pub const JSON_ONLY: &str =
    "actions take a JSON body (Content-Type: application/json, `{}` when empty): \
    another site's page cannot send one to the console, so it cannot act through your browser";

/// True unless a request could be another site's form or script acting
/// through the browser (cross-site request forgery): an action (POST) must
/// say `Content-Type: application/json`, which a page of another origin
/// cannot send without the console's consent (it gives none).
pub fn cross_site_safe(method: &str, content_type: Option<&str>) -> bool {
    method != "POST"
        || content_type.is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// True when a request naming `host` (its `Host` header) may be answered by
/// a console listening on a loopback address: only names of this machine,
/// so a page of another site whose name was pointed at 127.0.0.1 (DNS
/// rebinding) gets nothing. A console listening elsewhere answers any host
/// (its proxy decides).
pub fn host_allowed(host: Option<&str>, loopback: bool) -> bool {
    if !loopback {
        return true;
    }
    let Some(host) = host else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
