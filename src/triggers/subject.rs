//! Subject triggers: a job that starts one order per message published on
//! a NATS subject, with parameters mapped from the message. Pure: the
//! subject and mapping syntax checked at deploy, the message mapped to
//! parameters, and the names and keys the broker and the Scheduler share.
//!
//! ```toml
//! [[job.triggers]]
//! kind = "subject"
//! name = "orders.created.>"
//! params = { id = "$.order.id", region = "header:Region", kind = "token:2" }
//! ```
//!
//! A mapping is one of:
//!
//! | source | the value |
//! |---|---|
//! | `$.a.b`, `$.items[0].id`, `$` | a field of the JSON payload: a string as is, a number or boolean as written, an object or array as compact JSON; absent or `null`: unmappable |
//! | `header:NAME` | the message's header `NAME` (its first value) |
//! | `token:N` | the subject's `N`-th token, from 1 |
//! | `subject` | the whole subject |
//! | `literal:TEXT` | `TEXT` |
//!
//! A message that cannot be mapped (a field or header missing, a payload
//! that is no JSON, a value too long) is [`Unmappable`], with the reason
//! the dead-letter subject carries.
//!
//! Exactly once: the Scheduler submits each message with the request id
//! [`request_id`], `JOB@msg:STREAM_CREATED_MS:SEQ`, from the trigger
//! stream's creation time and the message's sequence in it; order ids
//! derive from request ids, so a message delivered again (a Scheduler
//! that died before acknowledging it, a submit retried) finds the order it
//! made.

use std::collections::BTreeMap;

use crate::params::{is_param_name, is_param_value, MAX_PARAM_BYTES};
use crate::protocol::TriggerSpec;

/// The durable consumer of a job's subject triggers is this prefix and the
/// job's name; the broker owns the consumers with it.
pub const CONSUMER_PREFIX: &str = "job_";

/// The header naming why a message was dead-lettered.
pub const REASON_HEADER: &str = "Baton-Reason";
/// The header naming the subject a dead-lettered message came on.
pub const SUBJECT_HEADER: &str = "Baton-Subject";
/// The header with a dead-lettered message's sequence in the trigger stream.
pub const SEQUENCE_HEADER: &str = "Baton-Sequence";

/// Where one parameter's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path into the JSON payload (`$.a.b[0]`); empty: the whole payload.
    Json(Vec<Step>),
    Header(String),
    /// The subject's token, from 1.
    Token(usize),
    Subject,
    Literal(String),
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A message as the Scheduler reads it from the trigger stream.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub subject: &'a str,
    /// Header names and values, in the order sent.
    pub headers: &'a [(String, String)],
    pub payload: &'a [u8],
}

/// Why a message starts no order; its text goes into the dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmappable {
    #[error("subject '{subject}' matches none of the job's subject triggers")]
    NoTrigger { subject: String },
    #[error("parameter '{param}': {source_text}: the payload is not JSON ({reason})")]
    NotJson {
        param: String,
        source_text: String,
        reason: String,
    },
    #[error("parameter '{param}': {source_text}: no such field in the payload")]
    MissingField { param: String, source_text: String },
    #[error("parameter '{param}': {source_text}: the message has no such header")]
    MissingHeader { param: String, source_text: String },
    #[error("parameter '{param}': {source_text}: the subject '{subject}' has fewer tokens")]
    MissingToken {
        param: String,
        source_text: String,
        subject: String,
    },
    #[error(
        "parameter '{param}': the value is longer than {MAX_PARAM_BYTES} bytes or contains NUL"
    )]
    BadValue { param: String },
}

/// Checks a trigger subject: NATS syntax (tokens separated by `.`, none
/// empty, no whitespace; `*` a whole token, `>` a whole last token), and
/// not one of Baton's or the server's own subjects.
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("the subject is empty".into());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("subject '{subject}' contains whitespace"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!(
                "subject '{subject}' has an empty token (two dots, or a dot at an end)"
            ));
        }
        if token.len() > 1 && (token.contains('*') || token.contains('>')) {
            return Err(format!(
                "subject '{subject}': a wildcard ('*' or '>') must be a whole token"
            ));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(format!(
                "subject '{subject}': '>' may only be the last token"
            ));
        }
    }
    let first = tokens[0];
    if first == "baton"
        || first.starts_with('$')
        || first == "_INBOX"
        || first == "*"
        || first == ">"
    {
        return Err(format!(
            "subject '{subject}' is not for triggers: subjects starting with 'baton.', '$' (JetStream, the system account) or '_INBOX', and subjects starting with a wildcard, are reserved; use your own first token, such as 'orders.created.>'"
        ));
    }
    Ok(())
}

/// Parses a mapping (`$.a.b`, `header:NAME`, `token:N`, `subject`,
/// `literal:TEXT`); the error says what is accepted.
pub fn parse_source(text: &str) -> Result<Source, String> {
    if let Some(rest) = text.strip_prefix('$') {
        return parse_path(rest).map(Source::Json).map_err(|why| {
            format!("'{text}': {why}; a JSON path is written $.a.b or $.items[0].id")
        });
    }
    if let Some(name) = text.strip_prefix("header:") {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ':') {
            return Err(format!("'{text}': a header name has no spaces or ':'"));
        }
        return Ok(Source::Header(name.to_string()));
    }
    if let Some(n) = text.strip_prefix("token:") {
        return match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Source::Token(n)),
            _ => Err(format!(
                "'{text}': tokens are counted from 1 (token:1, token:2, ...)"
            )),
        };
    }
    if text == "subject" {
        return Ok(Source::Subject);
    }
    if let Some(value) = text.strip_prefix("literal:") {
        return Ok(Source::Literal(value.to_string()));
    }
    Err(format!(
        "'{text}' is no mapping: write \"$.a.b\" (a JSON field), \"header:NAME\", \"token:N\" (the subject's N-th token), \"subject\" or \"literal:TEXT\""
    ))
}

/// `.a.b[0]` after the `$`.
fn parse_path(mut rest: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            if key.is_empty() {
                return Err("an empty field name".into());
            }
            steps.push(Step::Key(key.to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or("a '[' without ']'")?;
            let index = after[..end]
                .parse::<usize>()
                .map_err(|_| format!("'[{}]' is no array index", &after[..end]))?;
            steps.push(Step::Index(index));
            rest = &after[end + 1..];
        } else {
            return Err(format!("unexpected '{rest}'"));
        }
    }
    Ok(steps)
}

/// Checks a subject trigger at deploy: its subject, each mapping, each
/// mapped parameter declared. The error is the field under the trigger
/// (`name`, `params.NAME`) and why.
pub fn check_trigger(
    name: &str,
    params: &BTreeMap<String, String>,
    declared: &dyn Fn(&str) -> bool,
) -> Result<(), (String, String)> {
    check_subject(name).map_err(|e| ("name".to_string(), e))?;
    for (param, text) in params {
        let field = format!("params.{param}");
        if !is_param_name(param) || !declared(param) {
            return Err((
                field,
                format!("maps parameter '{param}', which the job does not declare; declare [job.params.{param}] or remove the mapping"),
            ));
        }
        let source = parse_source(text).map_err(|e| (field.clone(), e))?;
        if let Source::Literal(value) = &source {
            if !is_param_value(value) {
                return Err((
                    field,
                    format!("the literal is longer than {MAX_PARAM_BYTES} bytes or contains NUL"),
                ));
            }
        }
    }
    Ok(())
}

/// The subject triggers of a job: (subject, mapping) of each, in order.
pub fn subject_triggers(triggers: &[TriggerSpec]) -> Vec<(&str, &BTreeMap<String, String>)> {
    triggers
        .iter()
        .filter_map(|t| match t {
            TriggerSpec::Subject { name, params } => Some((name.as_str(), params)),
            _ => None,
        })
        .collect()
}

/// Maps `message` by the first of the job's `triggers` whose subject
/// matches it: the order's parameters, or why there are none.
pub fn map_message(
    triggers: &[(&str, &BTreeMap<String, String>)],
    message: Incoming<'_>,
) -> Result<BTreeMap<String, String>, Unmappable> {
    let Some((_, params)) = triggers
        .iter()
        .find(|(pattern, _)| subject_matches(pattern, message.subject))
    else {
        return Err(Unmappable::NoTrigger {
            subject: message.subject.to_string(),
        });
    };
    let mut json: Option<Result<serde_json::Value, String>> = None;
    let mut out = BTreeMap::new();
    for (param, text) in params.iter() {
        let source_text = || text.clone();
        // checked at deploy; a mapping that no longer parses maps nothing
        let source = parse_source(text).unwrap_or(Source::Literal(String::new()));
        let value = match source {
            Source::Json(steps) => {
                let parsed = json.get_or_insert_with(|| {
                    serde_json::from_slice(message.payload).map_err(|e| e.to_string())
                });
                let root = parsed.as_ref().map_err(|reason| Unmappable::NotJson {
                    param: param.clone(),
                    source_text: source_text(),
                    reason: reason.clone(),
                })?;
                let found = walk(root, &steps).ok_or_else(|| Unmappable::MissingField {
                    param: param.clone(),
                    source_text: source_text(),
                })?;
                match found {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            }
            Source::Header(name) => (message.headers.iter())
                .find(|(h, _)| h.eq_ignore_ascii_case(&name))
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Unmappable::MissingHeader {
                    param: param.clone(),
                    source_text: source_text(),
                })?,
            Source::Token(n) => (message.subject.split('.').nth(n - 1))
                .map(String::from)
                .ok_or_else(|| Unmappable::MissingToken {
                    param: param.clone(),
                    source_text: source_text(),
                    subject: message.subject.to_string(),
                })?,
            Source::Subject => message.subject.to_string(),
            Source::Literal(value) => value,
        };
        if !is_param_value(&value) {
            return Err(Unmappable::BadValue {
                param: param.clone(),
            });
        }
        out.insert(param.clone(), value);
    }
    Ok(out)
}

/// The value at `steps` under `root`; `None` when absent or `null`.
fn walk<'a>(root: &'a serde_json::Value, steps: &[Step]) -> Option<&'a serde_json::Value> {
    let mut at = root;
    for step in steps {
        at = match step {
            Step::Key(key) => at.as_object()?.get(key)?,
            Step::Index(i) => at.as_array()?.get(*i)?,
        };
    }
    (!at.is_null()).then_some(at)
}

/// Whether `subject` (no wildcards) matches `pattern`, as NATS matches;
/// whether every subject `wanted` matches, `pattern` matches too.
pub use crate::protocol::subjects::{pattern_covers as covers, subject_matches};

/// The fewest subjects matching what `subjects` match: duplicates and
/// subjects another covers left out, sorted. JetStream refuses overlapping
/// subjects in one stream and overlapping filters in one consumer; two
/// subjects that overlap without one covering the other (`a.*.c`,
/// `a.b.*`) are both kept, and the stream or consumer refuses them.
pub fn minimal_cover<'a>(subjects: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut all: Vec<&str> = subjects.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    let kept: Vec<String> = all
        .iter()
        .filter(|s| !all.iter().any(|o| o != *s && covers(o, s)))
        .map(|s| s.to_string())
        .collect();
    kept
}

/// Whether two subjects may both match one message.
pub fn overlap(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (None, None) => return true,
            (Some(p), Some(q)) if p == q || p == "*" || q == "*" => {}
            _ => return false,
        }
    }
}

/// What the trigger stream should be: the subjects it captures, and each
/// job's durable consumer with its filter subjects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPlan {
    pub subjects: Vec<String>,
    pub consumers: BTreeMap<String, Vec<String>>,
}

/// The trigger stream for the deployed `jobs` (name, triggers): one
/// consumer per job with subject triggers (a paused job's too: its
/// messages wait), the stream capturing all their subjects. Subjects under
/// Baton's own `prefix` (when it is not `baton`, which deploy refuses) are
/// left out: they are Baton's, never a trigger's.
pub fn stream_plan<'a>(
    prefix: &str,
    jobs: impl IntoIterator<Item = (&'a str, &'a [TriggerSpec])>,
) -> StreamPlan {
    let mut plan = StreamPlan::default();
    let mut all = Vec::new();
    for (job, triggers) in jobs {
        let subjects: Vec<&str> = (subject_triggers(triggers).into_iter())
            .map(|t| t.0)
            .filter(|s| s.split('.').next() != Some(prefix))
            .collect();
        if subjects.is_empty() {
            continue;
        }
        all.extend(subjects.iter().copied());
        plan.consumers
            .insert(consumer_name(job), minimal_cover(subjects));
    }
    plan.subjects = stream_subjects(all);
    plan
}

/// What one stream captures for `subjects`: their [`minimal_cover`], with
/// two that overlap without one covering the other (`a.*.c`, `a.b.*`,
/// which JetStream refuses together) replaced by one covering both
/// (`a.*.*`). The stream may keep a message no consumer wants; each
/// consumer still filters on its job's own subjects.
pub fn stream_subjects<'a>(subjects: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut cover = minimal_cover(subjects);
    loop {
        let pair = (0..cover.len())
            .flat_map(|i| (i + 1..cover.len()).map(move |j| (i, j)))
            .find(|&(i, j)| overlap(&cover[i], &cover[j]));
        let Some((i, j)) = pair else {
            return cover;
        };
        let wider = widen(&cover[i], &cover[j]);
        cover.remove(j);
        cover.remove(i);
        cover.push(wider);
        cover = minimal_cover(cover.iter().map(String::as_str));
    }
}

/// A subject covering both `a` and `b`: equal tokens kept, others `*`,
/// and `>` from where either has it (or where their lengths part).
fn widen(a: &str, b: &str) -> String {
    let (x, y): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    let mut out = Vec::new();
    for i in 0..x.len().max(y.len()) {
        match (x.get(i), y.get(i)) {
            (Some(&">"), _) | (_, Some(&">")) | (None, _) | (_, None) => {
                out.push(">");
                break;
            }
            (Some(p), Some(q)) if p == q => out.push(p),
            _ => out.push("*"),
        }
    }
    out.join(".")
}

/// The durable consumer of `job`'s subject triggers.
pub fn consumer_name(job: &str) -> String {
    format!("{CONSUMER_PREFIX}{job}")
}

/// The job a consumer of the trigger stream belongs to, if Baton made it.
pub fn consumer_job(consumer: &str) -> Option<&str> {
    consumer.strip_prefix(CONSUMER_PREFIX)
}

/// The request id a message is submitted with: one per job, stream (by its
/// creation time) and sequence, so a message delivered again finds its order.
pub fn request_id(job: &str, stream_created_ms: u64, sequence: u64) -> String {
    format!("{job}@msg:{stream_created_ms}:{sequence}")
}

#[cfg(test)]
#[path = "subject_tests.rs"]
mod tests;
