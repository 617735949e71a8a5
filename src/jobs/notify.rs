//! The `notify` table of a job or workflow in a deploy file:
//! `notify = { failure = ["ops"], success = ["audit"], missed = ["ops"] }`, naming targets of
//! the broker's `[[notify.target]]`. The deployer cannot see the broker's
//! configuration, so a name is checked here for its shape only; a name no
//! broker knows is warned about and counted when an order would use it
//! (`src/notify/`).

use serde::Deserialize;

use crate::protocol::subjects::is_valid_token;
use crate::protocol::NotifyRules;

/// `notify` as an operator writes it (unknown keys refused).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyDef {
    #[serde(default)]
    failure: Vec<String>,
    #[serde(default)]
    success: Vec<String>,
    #[serde(default)]
    missed: Vec<String>,
}

impl From<NotifyDef> for NotifyRules {
    fn from(def: NotifyDef) -> NotifyRules {
        NotifyRules {
            failure: def.failure,
            success: def.success,
            missed: def.missed,
        }
    }
}

/// Every target name is one subject token: the field and the problem otherwise.
pub fn validate(rules: &NotifyRules) -> Result<(), (String, String)> {
    for (field, names) in [
        ("failure", &rules.failure),
        ("success", &rules.success),
        ("missed", &rules.missed),
    ] {
        for name in names {
            if !is_valid_token(name) {
                return Err((
                    format!("notify.{field}"),
                    format!(
                        "{name:?} is no target name: use the name of a [[notify.target]] of \
                         the broker's configuration (letters, digits, '-' and '_')"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_tokens() {
        let good = NotifyRules {
            failure: vec!["ops".into()],
            success: vec!["audit-1".into()],
            missed: Vec::new(),
        };
        assert!(validate(&good).is_ok());
        let bad = NotifyRules {
            failure: vec![],
            success: vec!["a b".into()],
            missed: Vec::new(),
        };
        let (field, message) = validate(&bad).unwrap_err();
        assert_eq!(field, "notify.success");
        assert!(message.contains("[[notify.target]]"), "{message}");
    }
}
