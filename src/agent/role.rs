//! The agent's side of the Scheduler role: the broker's [`RoleCommand`]s,
//! broker epochs and the lease. Pure: the time is passed in.
//!
//! A controlled agent starts as a spare. `on` makes it Scheduler until
//! `lease_ms` after receipt, `renew` pushes that end out (a spare stays a
//! spare), `off` makes it a spare again, and a lease that runs out without a
//! renewal turns it off by itself ([`RoleState::expire`]); the agent's lease
//! is shorter than the broker's count of it by the grace, so it turns off
//! before the broker may turn another on. A command from an
//! older broker epoch than the newest one seen is refused and changes
//! nothing. An agent started without role control is Scheduler from the
//! start, has no lease, and refuses every command.

use std::time::{Duration, Instant};

use crate::protocol::{AgentRole, ErrorCode, ErrorReply, RoleAction, RoleCommand};

/// The role an agent holds, and until when.
#[derive(Debug, Clone)]
pub struct RoleState {
    agent_id: String,
    controlled: bool,
    role: AgentRole,
    /// When the Scheduler role ends without a renewal; controlled agents only.
    lease_until: Option<Instant>,
    /// The newest broker epoch obeyed.
    epoch: u64,
}

impl RoleState {
    /// A controlled agent starts as a spare; an uncontrolled one as Scheduler.
    pub fn new(agent_id: &str, controlled: bool) -> Self {
        RoleState {
            agent_id: agent_id.to_string(),
            controlled,
            role: if controlled {
                AgentRole::Spare
            } else {
                AgentRole::Scheduler
            },
            lease_until: None,
            epoch: 0,
        }
    }

    pub fn role(&self) -> AgentRole {
        self.role
    }

    /// Whether the broker controls the role.
    pub fn controlled(&self) -> bool {
        self.controlled
    }

    /// The newest broker epoch obeyed (0 before any command).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// What is left of the lease at `now`; `None` without one.
    pub fn lease_left(&self, now: Instant) -> Option<Duration> {
        self.lease_until
            .map(|until| until.saturating_duration_since(now))
    }

    /// Obeys `command`, received at `now`. Returns the role held before it
    /// (compare with [`role`](Self::role) to see a change), or the error to
    /// answer with; a refused command changes nothing.
    pub fn command(
        &mut self,
        command: &RoleCommand,
        now: Instant,
    ) -> Result<AgentRole, ErrorReply> {
        if !self.controlled {
            return Err(ErrorReply::new(
                ErrorCode::InvalidState,
                format!(
                    "agent {} does not let the broker control its role",
                    self.agent_id
                ),
            ));
        }
        if command.epoch < self.epoch {
            return Err(ErrorReply::new(
                ErrorCode::InvalidState,
                format!(
                    "stale broker epoch {} from {}: agent {} has obeyed epoch {}",
                    command.epoch, command.broker_id, self.agent_id, self.epoch
                ),
            ));
        }
        self.epoch = command.epoch;
        let before = self.role;
        let lease_end = now + Duration::from_millis(command.lease_ms);
        match command.action {
            RoleAction::On => {
                self.role = AgentRole::Scheduler;
                self.lease_until = Some(lease_end);
            }
            RoleAction::Renew => {
                if self.role == AgentRole::Scheduler {
                    self.lease_until = Some(lease_end);
                }
            }
            RoleAction::Off => self.give_up(),
        }
        Ok(before)
    }

    /// Turns a Scheduler whose lease has run out by `now` into a spare;
    /// true when it did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let ran_out =
            self.role == AgentRole::Scheduler && self.lease_until.is_some_and(|until| now >= until);
        if ran_out {
            self.give_up();
        }
        ran_out
    }

    /// Drops the Scheduler role (on shutdown, or when told `off`).
    pub fn give_up(&mut self) {
        self.role = AgentRole::Spare;
        self.lease_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(epoch: u64, action: RoleAction, lease_ms: u64) -> RoleCommand {
        RoleCommand {
            broker_id: "b".into(),
            epoch,
            command: 1,
            action,
            lease_ms,
        }
    }

    #[test]
    fn controlled_agent_starts_spare_and_takes_the_role_with_a_lease() {
        let t0 = Instant::now();
        let mut r = RoleState::new("a", true);
        assert_eq!(r.role(), AgentRole::Spare);
        assert_eq!(r.lease_left(t0), None);
        let before = r.command(&command(3, RoleAction::On, 1000), t0).unwrap();
        assert_eq!(before, AgentRole::Spare);
        assert_eq!(r.role(), AgentRole::Scheduler);
        assert_eq!(r.epoch(), 3);
        assert_eq!(r.lease_left(t0), Some(Duration::from_millis(1000)));
    }

    #[test]
    fn lease_runs_out_without_renewal_and_renewal_extends_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RoleState::new("a", true);
        r.command(&command(1, RoleAction::On, 1000), t0).unwrap();
        assert!(!r.expire(t0 + ms(999)));
        r.command(&command(1, RoleAction::Renew, 1000), t0 + ms(900))
            .unwrap();
        assert!(!r.expire(t0 + ms(1800)));
        assert_eq!(r.role(), AgentRole::Scheduler);
        assert!(r.expire(t0 + ms(1900)));
        assert_eq!(r.role(), AgentRole::Spare);
        assert_eq!(r.lease_left(t0), None);
        // a spare has nothing to expire
        assert!(!r.expire(t0 + ms(5000)));
    }

    #[test]
    fn renew_keeps_a_spare_spare() {
        let t0 = Instant::now();
        let mut r = RoleState::new("a", true);
        let before = r.command(&command(1, RoleAction::Renew, 1000), t0).unwrap();
        assert_eq!(before, AgentRole::Spare);
        assert_eq!(r.role(), AgentRole::Spare);
        assert_eq!(r.lease_left(t0), None);
        assert_eq!(r.epoch(), 1);
    }

    #[test]
    fn off_gives_the_role_up() {
        let t0 = Instant::now();
        let mut r = RoleState::new("a", true);
        r.command(&command(1, RoleAction::On, 1000), t0).unwrap();
        let before = r.command(&command(1, RoleAction::Off, 0), t0).unwrap();
        assert_eq!(before, AgentRole::Scheduler);
        assert_eq!(r.role(), AgentRole::Spare);
        assert_eq!(r.lease_left(t0), None);
    }

    #[test]
    fn older_epoch_is_refused_and_changes_nothing() {
        let t0 = Instant::now();
        let mut r = RoleState::new("a", true);
        r.command(&command(5, RoleAction::On, 1000), t0).unwrap();
        let refused = r.command(&command(4, RoleAction::Off, 0), t0).unwrap_err();
        assert_eq!(refused.error.code, ErrorCode::InvalidState);
        assert!(refused.error.message.contains("stale broker epoch"));
        assert_eq!(r.role(), AgentRole::Scheduler);
        assert_eq!(r.epoch(), 5);
        // the same epoch and newer ones are obeyed
        r.command(&command(5, RoleAction::Renew, 1000), t0).unwrap();
        r.command(&command(6, RoleAction::Off, 0), t0).unwrap();
        assert_eq!(r.role(), AgentRole::Spare);
        assert_eq!(r.epoch(), 6);
    }

    #[test]
    fn uncontrolled_agent_is_scheduler_without_lease_and_refuses_commands() {
        let t0 = Instant::now();
        let mut r = RoleState::new("solo", false);
        assert_eq!(r.role(), AgentRole::Scheduler);
        assert!(!r.expire(t0 + Duration::from_secs(3600)));
        for action in [RoleAction::On, RoleAction::Renew, RoleAction::Off] {
            let refused = r.command(&command(9, action, 1000), t0).unwrap_err();
            assert_eq!(refused.error.code, ErrorCode::InvalidState);
            assert_eq!(
                refused.error.message,
                "agent solo does not let the broker control its role"
            );
        }
        assert_eq!(r.role(), AgentRole::Scheduler);
        assert_eq!(r.epoch(), 0);
        r.give_up();
        assert_eq!(r.role(), AgentRole::Spare);
    }
}
