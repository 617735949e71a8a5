//! Publishes the server's permissions refuse: each violation is counted, and
//! the request waiting on that subject fails at once ([`BusError::Denied`]) instead of timing out, saying
//! which roles may publish there and whose credentials these are.

use super::{connect, Bus, BusError, OwnIdentity};

impl Bus {
    /// Awaits `operation`, which publishes on `subject`, unless the server
    /// refuses that publish to these credentials first ([`BusError::Denied`]
    /// at once instead of a timeout).
    pub(crate) async fn unless_denied<F: std::future::Future>(
        &self,
        subject: &str,
        operation: F,
    ) -> Result<F::Output, BusError> {
        let mut violations = self.stats.violations.subscribe();
        let refused = async {
            loop {
                match violations.recv().await {
                    Ok(message) if connect::violation_subject(&message) == Some(subject) => {
                        return message
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        futures::future::pending::<()>().await
                    }
                }
            }
        };
        tokio::select! {
            done = operation => Ok(done),
            reason = refused => Err(BusError::Denied {
                subject: subject.to_string(),
                reason,
                hint: self.denied_hint(subject),
            }),
        }
    }

    /// Which roles may publish on `subject`, and whose credentials these are.
    fn denied_hint(&self, subject: &str) -> String {
        let prefix = self.subjects.prefix();
        let may: Vec<String> = crate::auth::Role::ALL
            .into_iter()
            // a broker's seed is for brokers only, whatever it may publish
            .filter(|role| *role != crate::auth::Role::Broker)
            .filter(|role| crate::auth::permissions(*role, prefix, None, "-").may_publish(subject))
            .map(|role| role.to_string())
            .collect();
        let used = match self.own_identity() {
            OwnIdentity::Known(identity) => format!("these are {}'s", identity.name),
            _ => "see README: Security".to_string(),
        };
        match may.as_slice() {
            [] => format!("no client role may do this; {used}"),
            roles => format!("it takes the credentials of: {} ({used})", roles.join(", ")),
        }
    }
}
