//! Subject names. Every subject lives under a configurable prefix (default
//! `baton`) so several clusters can share one NATS account.
//!
//! A task's `started` and `log` events name their publishing subagent as
//! the last subject token ([`Subjects::task_event`]), which the server's
//! permissions hold to the subagent's own id; readers (`bus/logs.rs`,
//! `cli/submit.rs`, `cli/client.rs`) drop one whose payload names another
//! subagent ([`Subjects::publisher_matches`]). Signing every output line
//! would cost a signature per line; the subject costs nothing.
//!
//! | subject | kind | payload |
//! |---|---|---|
//! | `{p}.api.submit` | request | [`SubmitOrder`](super::SubmitOrder) -> [`SubmitReply`](super::SubmitReply) |
//! | `{p}.api.deploy` | request | [`DeployRequest`](super::DeployRequest) -> [`DeployReply`](super::DeployReply) |
//! | `{p}.api.order.get` | request | [`GetOrder`](super::GetOrder) -> [`OrderInfo`](super::OrderInfo) |
//! | `{p}.api.order.cancel` | request | [`CancelOrder`](super::CancelOrder) -> [`OrderInfo`](super::OrderInfo) |
//! | `{p}.api.order.suspend` | request | [`SuspendOrder`](super::SuspendOrder) -> [`OrderInfo`](super::OrderInfo) |
//! | `{p}.api.order.resume` | request | [`ResumeOrder`](super::ResumeOrder) -> [`OrderInfo`](super::OrderInfo) |
//! | `{p}.api.order.list` | request | [`ListOrders`](super::ListOrders) -> [`OrderList`](super::OrderList) |
//! | `{p}.subagent.{id}.kill` | request | [`KillTask`](super::KillTask) -> [`KillAccepted`](super::KillAccepted) |
//! | `{p}.api.status` | request | [`StatusRequest`](super::StatusRequest) -> [`StatusReply`](super::StatusReply) |
//! | `{p}.api.status.brokers` | request, every broker answers | [`StatusRequest`](super::StatusRequest) -> [`BrokerView`](super::BrokerView) |
//! | `{p}.api.subagent.control` | request | [`SubagentControl`](super::SubagentControl) -> [`SubagentControlReply`](super::SubagentControlReply) |
//! | `{p}.broker.leave` | request | [`Leave`](super::Leave) -> [`Left`](super::Left) |
//! | `{p}.subagent.{id}.ping` | request | [`Ping`](super::Ping) -> [`Pong`](super::Pong) |
//! | `{p}.subagent.{id}.stop` | request | [`StopSubagent`](super::StopSubagent) -> [`Stopping`](super::Stopping) |
//! | `{p}.cluster.subagent.{id}` | publish | [`SubagentChanged`](super::SubagentChanged) |
//! | `{p}.broker.register` | request | [`Register`](super::Register) -> [`Registered`](super::Registered) |
//! | `{p}.broker.result` | request | [`TaskResult`](super::TaskResult) -> [`ResultAck`](super::ResultAck) |
//! | `{p}.subagent.{id}.run` | request | [`RunTask`](super::RunTask) -> [`RunAccepted`](super::RunAccepted) |
//! | `{p}.hb.subagent.{id}` | publish | [`SubagentHeartbeat`](super::SubagentHeartbeat) |
//! | `{p}.hb.broker` | publish | [`BrokerHeartbeat`](super::BrokerHeartbeat) |
//! | `{p}.cluster.broker.{id}` | publish | [`BrokerChanged`](super::BrokerChanged) |
//! | `{p}.hb.agent.{id}` | publish | [`AgentHeartbeat`](super::AgentHeartbeat) |
//! | `{p}.agent.{id}.role` | request | [`RoleCommand`](super::RoleCommand) -> [`RoleAnswer`](super::RoleAnswer) |
//! | `{p}.agent.{id}.ping` | request | [`Ping`](super::Ping) -> [`AgentPong`](super::AgentPong) |
//! | `{p}.api.scheduler.control` | request | [`SchedulerControl`](super::SchedulerControl) -> [`SchedulerControlReply`](super::SchedulerControlReply) |
//! | `{p}.cluster.agent.{id}` | publish | [`AgentChanged`](super::AgentChanged) |
//! | `{p}.events.{job}.{order}.{kind}` | publish | [`OrderAccepted`](super::OrderAccepted), [`OrderChanged`](super::OrderChanged), [`OrderFinished`](super::OrderFinished) |
//! | `{p}.triggers.dead.{job}` | publish (JetStream) | a subject trigger's message that started no order, as received (payload and headers), plus the headers `Baton-Reason`, `Baton-Subject`, `Baton-Sequence` |
//! | `{p}.events.{job}.{order}.{kind}.{subagent}` | publish | [`TaskStarted`](super::TaskStarted), [`TaskLog`](super::TaskLog): the last token is the publishing subagent |

/// The last token of an event subject: what happened to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Accepted,
    Started,
    Log,
    Changed,
    Finished,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Accepted,
        EventKind::Started,
        EventKind::Log,
        EventKind::Changed,
        EventKind::Finished,
    ];

    pub fn token(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Started => "started",
            EventKind::Log => "log",
            EventKind::Changed => "changed",
            EventKind::Finished => "finished",
        }
    }

    pub fn from_token(token: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.token() == token)
    }
}

/// Builds every subject name from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Subjects {
        Subjects {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn submit(&self) -> String {
        format!("{}.api.submit", self.prefix)
    }

    pub fn deploy(&self) -> String {
        format!("{}.api.deploy", self.prefix)
    }

    pub fn order_get(&self) -> String {
        format!("{}.api.order.get", self.prefix)
    }

    pub fn order_cancel(&self) -> String {
        format!("{}.api.order.cancel", self.prefix)
    }

    pub fn order_suspend(&self) -> String {
        format!("{}.api.order.suspend", self.prefix)
    }

    pub fn order_resume(&self) -> String {
        format!("{}.api.order.resume", self.prefix)
    }

    pub fn order_list(&self) -> String {
        format!("{}.api.order.list", self.prefix)
    }

    /// The job inventory: every deployed job and workflow ([`super::ListJobs`]).
    pub fn job_list(&self) -> String {
        format!("{}.api.job.list", self.prefix)
    }

    /// One job or workflow in full ([`super::GetJob`]).
    pub fn job_get(&self) -> String {
        format!("{}.api.job.get", self.prefix)
    }

    /// Pause or resume a job or workflow ([`super::JobControl`], admin only).
    pub fn job_control(&self) -> String {
        format!("{}.api.job.control", self.prefix)
    }

    pub fn kill(&self, subagent: &str) -> String {
        format!("{}.subagent.{subagent}.kill", self.prefix)
    }

    pub fn status(&self) -> String {
        format!("{}.api.status", self.prefix)
    }

    /// Every broker process answers here with its own view of the
    /// leadership, standbys included.
    pub fn status_brokers(&self) -> String {
        format!("{}.api.status.brokers", self.prefix)
    }

    pub fn subagent_control(&self) -> String {
        format!("{}.api.subagent.control", self.prefix)
    }

    pub fn leave(&self) -> String {
        format!("{}.broker.leave", self.prefix)
    }

    pub fn ping(&self, subagent: &str) -> String {
        format!("{}.subagent.{subagent}.ping", self.prefix)
    }

    pub fn stop(&self, subagent: &str) -> String {
        format!("{}.subagent.{subagent}.stop", self.prefix)
    }

    pub fn subagent_changed(&self, subagent: &str) -> String {
        format!("{}.cluster.subagent.{subagent}", self.prefix)
    }

    /// Wildcard matching every subagent state change.
    pub fn subagent_changes(&self) -> String {
        self.subagent_changed("*")
    }

    pub fn register(&self) -> String {
        format!("{}.broker.register", self.prefix)
    }

    pub fn certificate(&self) -> String {
        format!("{}.broker.certificate", self.prefix)
    }

    pub fn result(&self) -> String {
        format!("{}.broker.result", self.prefix)
    }

    pub fn run(&self, subagent: &str) -> String {
        format!("{}.subagent.{subagent}.run", self.prefix)
    }

    pub fn subagent_heartbeat(&self, subagent: &str) -> String {
        format!("{}.hb.subagent.{subagent}", self.prefix)
    }

    /// Wildcard matching every subagent heartbeat.
    pub fn subagent_heartbeats(&self) -> String {
        self.subagent_heartbeat("*")
    }

    pub fn agent_heartbeat(&self, agent: &str) -> String {
        format!("{}.hb.agent.{agent}", self.prefix)
    }

    /// Wildcard matching every agent heartbeat.
    pub fn agent_heartbeats(&self) -> String {
        self.agent_heartbeat("*")
    }

    pub fn agent_role(&self, agent: &str) -> String {
        format!("{}.agent.{agent}.role", self.prefix)
    }

    pub fn agent_ping(&self, agent: &str) -> String {
        format!("{}.agent.{agent}.ping", self.prefix)
    }

    pub fn scheduler_control(&self) -> String {
        format!("{}.api.scheduler.control", self.prefix)
    }

    pub fn agent_changed(&self, agent: &str) -> String {
        format!("{}.cluster.agent.{agent}", self.prefix)
    }

    /// Wildcard matching every agent role change.
    /// Whether the triggers fire ([`super::TriggersChanged`]).
    pub fn triggers_changed(&self) -> String {
        format!("{}.cluster.scheduler", self.prefix)
    }

    /// Where the Scheduler tells of slots its misfire policy passed over.
    pub fn slots_missed(&self) -> String {
        format!("{}.cluster.scheduler.missed", self.prefix)
    }

    pub fn agent_changes(&self) -> String {
        self.agent_changed("*")
    }

    pub fn broker_changed(&self, broker: &str) -> String {
        format!("{}.cluster.broker.{broker}", self.prefix)
    }

    /// Wildcard matching every broker leadership change.
    pub fn broker_changes(&self) -> String {
        self.broker_changed("*")
    }

    pub fn broker_heartbeat(&self) -> String {
        format!("{}.hb.broker", self.prefix)
    }

    /// Where the broker publishes the audit record of `command` (which may
    /// be two tokens, as `order.cancel`).
    pub fn audit(&self, command: &str) -> String {
        format!("{}.audit.{command}", self.prefix)
    }

    /// Where the Scheduler puts a message of `job`'s subject triggers that
    /// starts no order (kept by the `triggers_dead` stream).
    pub fn trigger_dead(&self, job: &str) -> String {
        format!("{}.triggers.dead.{job}", self.prefix)
    }

    /// Wildcard for every dead letter (what the dead-letter stream keeps).
    pub fn all_trigger_dead(&self) -> String {
        format!("{}.triggers.dead.>", self.prefix)
    }

    /// Wildcard for every audit record (what the audit stream keeps).
    pub fn all_audit(&self) -> String {
        format!("{}.audit.>", self.prefix)
    }

    /// Where a notification target named by `subject` (one or more
    /// tokens, from the broker's `[[notify.target]]`) hears of orders.
    pub fn notify(&self, subject: &str) -> String {
        format!("{}.notify.{subject}", self.prefix)
    }

    pub fn event(&self, job: &str, order: &str, kind: EventKind) -> String {
        format!("{}.events.{job}.{order}.{}", self.prefix, kind.token())
    }

    /// A task's own event (`started`, `log`), published by `subagent`: its id
    /// is the last token, so the server's permissions hold each subagent to
    /// events in its own name.
    pub fn task_event(&self, job: &str, order: &str, kind: EventKind, subagent: &str) -> String {
        format!("{}.{subagent}", self.event(job, order, kind))
    }

    /// Wildcard for `kind` task events of `job`'s order `order` (`*`: any),
    /// from any subagent.
    pub fn task_events(&self, job: &str, order: &str, kind: EventKind) -> String {
        self.task_event(job, order, kind, "*")
    }

    /// The subagent a task event's subject names as its publisher; `None`
    /// for other events (and task events of subagents older than this).
    pub fn event_publisher<'s>(&self, subject: &'s str) -> Option<&'s str> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".events.")?;
        let mut parts = rest.split('.');
        let (_, _, _) = (parts.next()?, parts.next()?, parts.next()?);
        parts.next()
    }

    /// True unless a task event's subject names another publisher than the
    /// subagent its payload claims: a line another subagent wrote in its name.
    pub fn publisher_matches(&self, subject: &str, claimed_subagent: &str) -> bool {
        self.event_publisher(subject)
            .is_none_or(|publisher| publisher == claimed_subagent)
    }

    /// Wildcard for every event of every order.
    pub fn all_events(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// Wildcard for every event of one job's orders.
    pub fn job_events(&self, job: &str) -> String {
        format!("{}.events.{job}.>", self.prefix)
    }

    /// Wildcard for every event of one order.
    pub fn order_events(&self, order: &str) -> String {
        format!("{}.events.*.{order}.>", self.prefix)
    }

    /// Splits an event subject into (job, order, kind); `None` when it is not one.
    pub fn parse_event<'s>(&self, subject: &'s str) -> Option<(&'s str, &'s str, EventKind)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".events.")?;
        let mut parts = rest.split('.');
        let job = parts.next()?;
        let order = parts.next()?;
        let kind = EventKind::from_token(parts.next()?)?;
        // a task event may end with its publishing subagent
        let task_event = matches!(kind, EventKind::Started | EventKind::Log);
        if parts.next().is_some() && !task_event || parts.next().is_some() {
            return None;
        }
        Some((job, order, kind))
    }
}

/// True when `token` can be used as one subject token (and so as a job name,
/// subagent id or prefix): ASCII letters, digits, `-` and `_`, 1 to 64 chars.
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// True when the NATS subject pattern `pattern` (`*` one token, `>` the
/// rest) matches the literal `subject`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// True when every subject `wanted` (itself a pattern) could match is also
/// matched by `pattern`: whether a subscription to `wanted` is allowed.
pub fn pattern_covers(pattern: &str, wanted: &str) -> bool {
    let mut wanted_tokens = wanted.split('.');
    for p in pattern.split('.') {
        match (p, wanted_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            (_, Some(">")) => return false,
            ("*", Some(_)) => {}
            (p, Some(w)) if p == w => {}
            _ => return false,
        }
    }
    wanted_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_subjects_round_trip() {
        let s = Subjects::new("baton");
        for kind in EventKind::ALL {
            let subject = s.event("hello", "0192-ab", kind);
            assert_eq!(s.parse_event(&subject), Some(("hello", "0192-ab", kind)));
        }
        assert_eq!(s.parse_event("baton.events.a.b"), None);
        assert_eq!(s.parse_event("other.events.a.b.log"), None);
        let published = s.task_event("hello", "o1", EventKind::Log, "sub-1");
        assert_eq!(published, "baton.events.hello.o1.log.sub-1");
        assert_eq!(
            s.parse_event(&published),
            Some(("hello", "o1", EventKind::Log))
        );
        assert_eq!(s.event_publisher(&published), Some("sub-1"));
        assert!(s.publisher_matches(&published, "sub-1"));
        assert!(
            !s.publisher_matches(&published, "sub-2"),
            "written in another's name"
        );
        assert!(
            s.publisher_matches("baton.events.hello.o1.log", "sub-2"),
            "older subagents"
        );
        assert_eq!(s.parse_event("baton.events.a.b.finished.x"), None);
        assert_eq!(s.parse_event("baton.events.a.b.log.x.y"), None);
    }

    #[test]
    fn tokens() {
        assert!(is_valid_token("job_1-a"));
        assert!(!is_valid_token(""));
        assert!(!is_valid_token("a.b"));
        assert!(!is_valid_token("a b"));
        assert!(!is_valid_token("a*"));
        assert!(!is_valid_token(&"x".repeat(65)));
    }
}
