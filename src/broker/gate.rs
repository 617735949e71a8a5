//! Who may send what to the broker, checked before a handler sees the
//! message. The server's permissions are the first guard; this one holds
//! when they are wrong (pure: the decision only).
//!
//! - A subagent's registration, heartbeat, result and leave count only when
//!   signed by that subagent's own identity.
//! - Deploy needs an admin's signature (the `baton` CLI signs every request
//!   with its identity's seed); an operator's switches (job pause, subagent
//!   and Scheduler switch-over) an admin's or the web console's.
//! - Submits and order requests are open to any client the server lets in,
//!   signed or not (any NATS program may submit; nothing stops one from
//!   leaving a signature off), so their signatures are not checked here.
//!
//! Every refusal is answered `forbidden`, logged, counted, and recorded in
//! the audit trail (`Input::audited`, `audit.rs`).

use crate::auth::{Role, Sender};

/// What the broker was asked, when the sender matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked<'a> {
    /// Registration, heartbeat, result or leave of subagent `id`.
    FromSubagent(&'a str),
    /// Deploy (and undeploy).
    Admin,
    /// An operator's switch: job pause, subagent or Scheduler switch-over.
    Switch,
}

/// `Ok` when `sender` may ask this, else why not.
pub fn admits(asked: Asked<'_>, sender: &Sender) -> Result<(), String> {
    match asked {
        Asked::FromSubagent(id) if sender.is_subagent(id) => Ok(()),
        Asked::FromSubagent(id) => Err(format!(
            "not signed by subagent {id} (sender: {})",
            sender.describe()
        )),
        Asked::Admin if sender.is(Role::Admin) => Ok(()),
        Asked::Admin => Err(format!(
            "needs an admin's signature: use admin credentials with the baton CLI, \
             which signs its requests (sender: {})",
            sender.describe()
        )),
        Asked::Switch if sender.is(Role::Admin) || sender.is(Role::Console) => Ok(()),
        Asked::Switch => Err(format!(
            "needs an admin's or the console's signature: use admin credentials with \
             the baton CLI, which signs its requests (sender: {})",
            sender.describe()
        )),
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
    fn admin_requests_need_an_admin_s_signature() {
        assert!(admits(Asked::Admin, &verified(Role::Admin, None)).is_ok());
        for other in [
            verified(Role::Client, None),
            verified(Role::Monitor, None),
            verified(Role::Agent, None),
            verified(Role::Broker, None),
            verified(Role::Subagent, Some("s1")),
            Sender::Unsigned,
            Sender::Forged("bad".into()),
        ] {
            let refused = admits(Asked::Admin, &other);
            assert!(refused.is_err(), "{other:?}");
        }
        assert!(
            admits(Asked::Admin, &Sender::Unchecked).is_ok(),
            "--insecure"
        );
    }

    #[test]
    fn switches_need_an_admin_s_or_the_console_s_signature() {
        let console = verified(Role::Console, None);
        assert!(admits(Asked::Switch, &console).is_ok());
        assert!(admits(Asked::Switch, &verified(Role::Admin, None)).is_ok());
        assert!(admits(Asked::Admin, &console).is_err(), "no deploy");
        for other in [
            verified(Role::Client, None),
            verified(Role::Monitor, None),
            Sender::Unsigned,
        ] {
            assert!(admits(Asked::Switch, &other).is_err(), "{other:?}");
        }
    }
}
