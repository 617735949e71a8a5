//! Repeated submits: a `request_id` names one submit. Sent again with the
//! same job (or workflow) and the same parameters, it finds its first order
//! (`duplicate: true`); with another name or other parameters it is refused
//! with `conflict`, never answered with an order it did not ask for.
//!
//! Parameters are compared with defaults applied on both sides: the first
//! order's record holds its parameters resolved at its submit, and a repeat
//! is resolved against the current declaration like any submit (refused as
//! any submit would be) before it is compared. The record is found in
//! memory (an order or workflow order the broker holds) or, when creating
//! it in JetStream finds it there (another broker's, or one this broker
//! forgot), in the journal; both are compared the same way.
//!
//! [`check_repeat`] decides (pure); `core/submit.rs` answers.

use std::collections::BTreeMap;

use crate::protocol::OrderInfo;

/// What a repeat is compared with: the first order of its request id.
#[derive(Debug, Clone, Copy)]
pub struct FirstOrder<'a> {
    pub order_id: &'a str,
    /// The job or workflow it runs.
    pub job: &'a str,
    /// Its parameters, defaults applied.
    pub params: &'a BTreeMap<String, String>,
}

impl<'a> FirstOrder<'a> {
    pub fn of(info: &'a OrderInfo) -> FirstOrder<'a> {
        FirstOrder {
            order_id: &info.order_id,
            job: &info.job,
            params: &info.params,
        }
    }
}

/// A request id sent again asking for something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "request_id '{request_id}' was used for order {order_id}, and this submit differs: \
     {difference}; a new submit needs a new request_id"
)]
pub struct Conflict {
    pub request_id: String,
    pub order_id: String,
    /// What differs, naming the job or the parameters (never their values).
    pub difference: String,
}

/// Whether a submit of `job` with `params` (defaults applied) repeats the
/// first order of `request_id`.
pub fn check_repeat(
    request_id: &str,
    first: FirstOrder,
    job: &str,
    params: &BTreeMap<String, String>,
) -> Result<(), Conflict> {
    let conflict = |difference| Conflict {
        request_id: request_id.to_string(),
        order_id: first.order_id.to_string(),
        difference,
    };
    if first.job != job {
        return Err(conflict(format!(
            "it names '{job}', the order runs '{}'",
            first.job
        )));
    }
    let mut differ: Vec<&str> = params
        .iter()
        .filter(|(name, value)| first.params.get(*name) != Some(*value))
        .map(|(name, _)| name.as_str())
        .chain(
            first
                .params
                .keys()
                .filter(|name| !params.contains_key(*name))
                .map(String::as_str),
        )
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    differ.sort_unstable();
    Err(conflict(format!(
        "other values of parameter(s) {} (compared with defaults applied)",
        differ.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_same_job_and_parameters_repeat_the_first_order() {
        let stored = params(&[("who", "Ann"), ("mood", "good")]);
        let first = FirstOrder {
            order_id: "o-1",
            job: "hello",
            params: &stored,
        };
        assert_eq!(check_repeat("r1", first, "hello", &stored), Ok(()));
        // a parameter left out that the first order had (its default differs)
        assert!(check_repeat("r1", first, "hello", &params(&[("who", "Ann")])).is_err());
        let empty = BTreeMap::new();
        let none = FirstOrder {
            params: &empty,
            ..first
        };
        assert_eq!(check_repeat("r1", none, "hello", &params(&[])), Ok(()));
    }

    #[test]
    fn another_job_or_other_parameters_conflict_naming_what_differs() {
        let stored = params(&[("who", "Ann"), ("mood", "good")]);
        let first = FirstOrder {
            order_id: "o-1",
            job: "hello",
            params: &stored,
        };
        let e = check_repeat("r1", first, "count", &stored).unwrap_err();
        assert_eq!(
            e.to_string(),
            "request_id 'r1' was used for order o-1, and this submit differs: it names 'count', \
             the order runs 'hello'; a new submit needs a new request_id"
        );
        // another value, a missing one and an extra one: named, values never shown
        let other = params(&[("who", "Bob"), ("extra", "secret")]);
        let e = check_repeat("r1", first, "hello", &other).unwrap_err();
        assert_eq!(e.order_id, "o-1");
        assert_eq!(
            e.difference,
            "other values of parameter(s) extra, mood, who (compared with defaults applied)"
        );
        assert!(!e.to_string().contains("Bob") && !e.to_string().contains("secret"));
    }
}
