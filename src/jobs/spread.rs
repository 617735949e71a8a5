//! A job's `spread`, as a deploy file writes it ([`SpreadDef`]), and its
//! validation.
//!
//! ```toml
//! spread = "all"                                   # every member that is up
//! spread = { count = 3 }                           # up to 3, by the cluster's mode
//! spread = { succeed = "any", rejoin = "2m" }      # all; one success will do
//! spread = { count = 4, succeed = 3 }              # at least 3 of 4 must succeed
//! ```
//!
//! `succeed` is `"all"` (the default), `"any"` or a number: how many
//! members' tasks must succeed for the order to succeed. `rejoin` (default
//! 1m) is how long a member's task lost with its subagent waits for that
//! member to come back and run it again (restartable jobs only; `"0s"`:
//! it fails at once).

use std::time::Duration;

use serde::Deserialize;

use crate::protocol::SpreadPolicy;

/// `rejoin` when absent.
pub const DEFAULT_REJOIN: Duration = Duration::from_secs(60);
/// The longest `rejoin`.
pub const MAX_REJOIN: Duration = Duration::from_secs(24 * 3600);
/// The most members one order may name.
pub const MAX_COUNT: u32 = 10_000;

/// `spread` as an operator writes it: `"all"` or a table.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SpreadDef {
    Word(String),
    Table(SpreadTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpreadTable {
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    succeed: Option<Succeed>,
    #[serde(default, with = "super::human::option")]
    rejoin: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Succeed {
    Word(String),
    AtLeast(u32),
}

impl SpreadDef {
    /// The wire policy, or what is wrong: the field (as in the deploy file)
    /// and why.
    pub(crate) fn policy(self) -> Result<SpreadPolicy, (&'static str, String)> {
        let table = match self {
            SpreadDef::Word(w) if w == "all" => SpreadTable {
                count: None,
                succeed: None,
                rejoin: None,
            },
            SpreadDef::Word(w) => {
                let why = format!(
                    "{w:?} is not a spread; write \"all\" or a table such as {{ count = 3 }}"
                );
                return Err(("spread", why));
            }
            SpreadDef::Table(t) => t,
        };
        let min_succeeded = match table.succeed {
            None => None,
            Some(Succeed::Word(w)) if w == "all" => None,
            Some(Succeed::Word(w)) if w == "any" => Some(1),
            Some(Succeed::Word(w)) => {
                let why = format!("{w:?}: write \"all\", \"any\" or a number of members");
                return Err(("spread.succeed", why));
            }
            Some(Succeed::AtLeast(n)) => Some(n),
        };
        let rejoin = table.rejoin.unwrap_or(DEFAULT_REJOIN);
        let policy = SpreadPolicy {
            count: table.count,
            min_succeeded,
            rejoin_ms: u64::try_from(rejoin.as_millis()).unwrap_or(u64::MAX),
        };
        validate(&policy)?;
        Ok(policy)
    }
}

/// What is wrong with a policy: the field (as in the deploy file) and why.
pub fn validate(policy: &SpreadPolicy) -> Result<(), (&'static str, String)> {
    if let Some(count) = policy.count {
        if count == 0 || count > MAX_COUNT {
            let why = format!("must be 1 to {MAX_COUNT} (leave it out for every member)");
            return Err(("spread.count", why));
        }
    }
    match (policy.min_succeeded, policy.count) {
        (Some(0), _) => {
            let why = "must be at least 1 (\"any\" is 1)".to_string();
            return Err(("spread.succeed", why));
        }
        (Some(k), Some(count)) if k > count => {
            let why = format!("{k} can never be met by at most {count} members (spread.count)");
            return Err(("spread.succeed", why));
        }
        _ => {}
    }
    if policy.rejoin_ms > MAX_REJOIN.as_millis() as u64 {
        return Err(("spread.rejoin", "must be at most 24h".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SpreadPolicy, (&'static str, String)> {
        #[derive(Deserialize)]
        struct T {
            spread: SpreadDef,
        }
        let t: T = toml::from_str(text).map_err(|e| ("toml", e.to_string()))?;
        t.spread.policy()
    }

    #[test]
    fn the_written_forms_read_as_policies() {
        let all = parse("spread = \"all\"").unwrap();
        assert_eq!(
            all,
            SpreadPolicy {
                count: None,
                min_succeeded: None,
                rejoin_ms: 60_000
            }
        );
        let three = parse("spread = { count = 3 }").unwrap();
        assert_eq!(three.count, Some(3));
        assert_eq!(three.min_succeeded, None);
        let any = parse("spread = { succeed = \"any\", rejoin = \"2m\" }").unwrap();
        assert_eq!((any.min_succeeded, any.rejoin_ms), (Some(1), 120_000));
        let k = parse("spread = { count = 4, succeed = 3, rejoin = \"0s\" }").unwrap();
        assert_eq!(
            (k.count, k.min_succeeded, k.rejoin_ms),
            (Some(4), Some(3), 0)
        );
    }

    #[test]
    fn bad_spreads_name_their_field() {
        for (text, field) in [
            ("spread = \"every\"", "spread"),
            ("spread = { count = 0 }", "spread.count"),
            ("spread = { count = 2, succeed = 3 }", "spread.succeed"),
            ("spread = { succeed = 0 }", "spread.succeed"),
            ("spread = { succeed = \"most\" }", "spread.succeed"),
            ("spread = { rejoin = \"2d\" }", "spread.rejoin"),
        ] {
            let (f, why) = parse(text).unwrap_err();
            assert_eq!(f, field, "{text}: {why}");
            assert!(!why.is_empty());
        }
        assert!(parse("spread = { counts = 2 }").is_err(), "unknown key");
    }
}
