//! Who may send what to the broker, checked on every message before a
//! handler sees it. The server's permissions are the first guard; this one
//! holds when they are wrong (pure: the decision only).
//!
//! - A subagent's registration, heartbeat, result and leave count only when
//!   signed by that subagent's own identity.
//! - A client-facing request signed by a trusted identity must come from a
//!   role that may ask it (submit: client, admin, or an agent firing a
//!   slot; deploy and switch-over: admin; reads: client, admin, monitor).
//!   An unsigned request is any NATS client's, let through by the server's
//!   permissions, and is answered; a forged signature never is.

use crate::auth::{Role, Sender};

/// What the broker was asked, for the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked<'a> {
    /// Registration, heartbeat, result or leave of subagent `id`.
    FromSubagent(&'a str),
    Submit,
    /// Deploy, subagent switch-over.
    Admin,
    /// Cancel, suspend, resume.
    ChangeOrder,
    /// Get, list, status.
    Read,
}

/// `Ok` when `sender` may ask this, else why not.
pub fn admits(asked: Asked<'_>, sender: &Sender) -> Result<(), String> {
    if let Sender::Forged(why) = sender {
        return Err(format!("signature does not verify: {why}"));
    }
    let allowed: &[Role] = match asked {
        Asked::FromSubagent(id) => {
            return if sender.is_subagent(id) {
                Ok(())
            } else {
                Err(format!(
                    "not signed by subagent {id} (sender: {})",
                    sender.describe()
                ))
            };
        }
        Asked::Submit => &[Role::Client, Role::Admin, Role::Agent],
        Asked::Admin => &[Role::Admin],
        Asked::ChangeOrder => &[Role::Client, Role::Admin],
        Asked::Read => &[Role::Client, Role::Admin, Role::Monitor],
    };
    match sender.role() {
        Some(role) if !allowed.contains(&role) => Err(format!(
            "the {role} role may not ask this (sender: {})",
            sender.describe()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;

    fn verified(role: Role, id: Option<&str>) -> Sender {
        Sender::Verified(Identity {
            name: crate::auth::identity_name(role, id),
            role: role.as_str().into(),
            id: id.map(str::to_string),
            public_key: "U".into(),
        })
    }

    #[test]
    fn reports_about_a_subagent_come_from_that_subagent_only() {
        let s1 = verified(Role::Subagent, Some("s1"));
        assert!(admits(Asked::FromSubagent("s1"), &s1).is_ok());
        assert!(admits(Asked::FromSubagent("s2"), &s1).is_err());
        for other in [
            verified(Role::Broker, None),
            verified(Role::Admin, None),
            Sender::Unsigned,
            Sender::Forged("x".into()),
        ] {
            assert!(
                admits(Asked::FromSubagent("s1"), &other).is_err(),
                "{other:?}"
            );
        }
        assert!(admits(Asked::FromSubagent("s1"), &Sender::Unchecked).is_ok());
    }

    #[test]
    fn requests_need_a_role_that_may_ask_them_when_signed() {
        let (client, admin, monitor, agent, sub) = (
            verified(Role::Client, None),
            verified(Role::Admin, None),
            verified(Role::Monitor, None),
            verified(Role::Agent, None),
            verified(Role::Subagent, Some("s1")),
        );
        assert!(admits(Asked::Submit, &agent).is_ok());
        assert!(admits(Asked::Submit, &client).is_ok());
        assert!(admits(Asked::Submit, &monitor).is_err());
        assert!(admits(Asked::Submit, &sub).is_err());
        assert!(admits(Asked::Admin, &admin).is_ok());
        for not_admin in [&client, &monitor, &agent, &sub] {
            assert!(admits(Asked::Admin, not_admin).is_err(), "{not_admin:?}");
        }
        assert!(admits(Asked::ChangeOrder, &monitor).is_err());
        assert!(admits(Asked::Read, &monitor).is_ok());
        // unsigned: any NATS client the server let through
        assert!(admits(Asked::Admin, &Sender::Unsigned).is_ok());
        assert!(admits(Asked::Read, &Sender::Forged("bad".into())).is_err());
    }
}
