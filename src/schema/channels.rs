//! The table of subjects ([`CHANNELS`]): each one's address, message and
//! reply, who publishes and who subscribes, its encodings and what it is
//! for; and the `{parameter}`s an address may use.

/// The kinds of process on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peer {
    /// `baton` CLI commands or any other NATS client.
    Client,
    Broker,
    Subagent,
    /// `baton agent`: may hold the Scheduler role and then fires triggers.
    Agent,
}

impl Peer {
    pub(super) fn token(self) -> &'static str {
        match self {
            Peer::Client => "client",
            Peer::Broker => "broker",
            Peer::Subagent => "subagent",
            Peer::Agent => "agent",
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Peer::Client => "clients (the `baton` CLI or any NATS client)",
            Peer::Broker => "the broker",
            Peer::Subagent => "a subagent",
            Peer::Agent => "an agent",
        }
    }
}

/// One subject.
pub(super) struct Channel {
    /// The channel's key in the AsyncAPI document.
    pub(super) id: &'static str,
    /// The subject, with `{parameter}` placeholders.
    pub(super) address: &'static str,
    /// The message published on it (the request, on request subjects).
    pub(super) message: &'static str,
    /// On request subjects, the success reply; the other reply is always `ErrorReply`.
    pub(super) reply: Option<&'static str>,
    pub(super) publisher: Peer,
    pub(super) subscriber: Peer,
    /// Requests may be JSON (`Content-Type: application/json`); replies follow.
    pub(super) json: bool,
    /// What the subject is for, in one sentence.
    pub(super) summary: &'static str,
}

const fn channel(
    id: &'static str,
    address: &'static str,
    (message, reply): (&'static str, Option<&'static str>),
    (publisher, subscriber): (Peer, Peer),
    json: bool,
    summary: &'static str,
) -> Channel {
    Channel {
        id,
        address,
        message,
        reply,
        publisher,
        subscriber,
        json,
        summary,
    }
}

/// Every subject in `protocol::subjects`, once.
#[rustfmt::skip]
pub(super) const CHANNELS: &[Channel] = {
    use Peer::{Agent, Broker, Client, Subagent};
    &[
    channel("submit", "{prefix}.api.submit", ("SubmitOrder", Some("SubmitReply")), (Client, Broker), true,
        "Submit an order: one run of a deployed job. The order is durable once the reply arrives."),
    channel("deploy", "{prefix}.api.deploy", ("DeployRequest", Some("DeployReply")), (Client, Broker), true,
        "Add or replace job, cluster and workflow definitions, and remove some (`remove`, or `prune` for all the request does not hold); the reply's plan says what was added, changed field by field, removed and left. Admin only."),
    channel("jobList", "{prefix}.api.job.list", ("ListJobs", Some("JobList")), (Client, Broker), true,
        "The job inventory: every deployed job and workflow with its cluster, triggers, pause, next fire time (with its trigger's zone) and last order."),
    channel("jobGet", "{prefix}.api.job.get", ("GetJob", Some("JobInfo")), (Client, Broker), true,
        "One job or workflow: its definition, pause and skipped slots, next 10 fire times, newest orders, and the workflows that run it."),
    channel("jobControl", "{prefix}.api.job.control", ("JobControl", Some("JobControlReply")), (Client, Broker), true,
        "Pause (its triggers do not fire; with all, manual submits are refused too) or resume a job or workflow; stored before the reply, held by every broker and Scheduler after. Admin only."),
    channel("orderGet", "{prefix}.api.order.get", ("GetOrder", Some("OrderInfo")), (Client, Broker), true,
        "Look up one order and its current state."),
    channel("status", "{prefix}.api.status", ("StatusRequest", Some("StatusReply")), (Client, Broker), true,
        "Ask the broker for the cluster's state: subagents, jobs, order counts."),
    channel("statusBrokers", "{prefix}.api.status.brokers", ("StatusRequest", Some("BrokerView")), (Client, Broker), true,
        "Ask every broker, standbys included, for its own view of the leadership (who holds the lease); every one answers, so gather the answers for a while."),
    channel("orderCancel", "{prefix}.api.order.cancel", ("CancelOrder", Some("OrderInfo")), (Client, Broker), true,
        "Cancel an order: a waiting one at once, a running one when its task ends (now with kill). Idempotent."),
    channel("orderSuspend", "{prefix}.api.order.suspend", ("SuspendOrder", Some("OrderInfo")), (Client, Broker), true,
        "Suspend a workflow order: it holds before its next step once its running steps finish (or are killed, with kill, and run again on resume). Idempotent."),
    channel("orderResume", "{prefix}.api.order.resume", ("ResumeOrder", Some("OrderInfo")), (Client, Broker), true,
        "Resume a suspended or failed workflow order, optionally from a step or with failed steps counted as succeeded."),
    channel("orderList", "{prefix}.api.order.list", ("ListOrders", Some("OrderList")), (Client, Broker), true,
        "List the orders the broker holds (every unfinished one and the newest finished ones), newest first, filtered by workflow, job, state and time."),
    channel("kill", "{prefix}.subagent.{subagent_id}.kill", ("KillTask", Some("KillAccepted")), (Broker, Subagent), false,
        "Kill a running task now (a cancelled order's, with kill); its result follows as usual."),
    channel("subagentControl", "{prefix}.api.subagent.control", ("SubagentControl", Some("SubagentControlReply")), (Client, Broker), true,
        "Switch-over by an operator: disable, enable or stop (drain) a subagent."),
    channel("leave", "{prefix}.broker.leave", ("Leave", Some("Left")), (Subagent, Broker), false,
        "A drained subagent leaves normally; this is not a failure."),
    channel("ping", "{prefix}.subagent.{subagent_id}.ping", ("Ping", Some("Pong")), (Broker, Subagent), false,
        "Liveness probe when heartbeats are late: a killed subagent has no responders, a busy one answers late."),
    channel("stop", "{prefix}.subagent.{subagent_id}.stop", ("StopSubagent", Some("Stopping")), (Broker, Subagent), false,
        "Drain and exit, as on SIGTERM."),
    channel("subagentChanged", "{prefix}.cluster.subagent.{subagent_id}", ("SubagentChanged", None), (Broker, Client), false,
        "Event: a subagent joined, was lost, came back, was disabled or enabled, is draining, or left."),
    channel("register", "{prefix}.broker.register", ("Register", Some("Registered")), (Subagent, Broker), false,
        "A subagent introduces itself when it starts, retrying until a broker answers."),
    channel("result", "{prefix}.broker.result", ("TaskResult", Some("ResultAck")), (Subagent, Broker), false,
        "A subagent reports how a task ended; it repeats the report until it is acknowledged."),
    channel("certificate", "{prefix}.broker.certificate", ("DeathCertificate", Some("CertificateAccepted")), (Subagent, Broker), false,
        "A subagent's reaper certifies that the subagent process died and that it killed its tasks' process groups and saw them gone; the broker runs those tasks again elsewhere at once. Only the subagent's own identity may send it, and it counts only for the process it names."),
    channel("run", "{prefix}.subagent.{subagent_id}.run", ("RunTask", Some("RunAccepted")), (Broker, Subagent), false,
        "The broker hands one task to one subagent; sending the same task_id again starts no second copy."),
    channel("subagentHeartbeat", "{prefix}.hb.subagent.{subagent_id}", ("SubagentHeartbeat", None), (Subagent, Broker), false,
        "A subagent is alive, with the tasks it runs; the broker takes it for lost when heartbeats stop."),
    channel("brokerHeartbeat", "{prefix}.hb.broker", ("BrokerHeartbeat", None), (Broker, Client), false,
        "The broker is alive. No Baton process depends on it in protocol v1; monitors may watch it."),
    channel("agentHeartbeat", "{prefix}.hb.agent.{agent_id}", ("AgentHeartbeat", None), (Agent, Broker), false,
        "An agent is alive, with its role and health figures; the broker elects the Scheduler from these."),
    channel("agentRole", "{prefix}.agent.{agent_id}.role", ("RoleCommand", Some("RoleAnswer")), (Broker, Agent), false,
        "The broker gives (with a lease), renews or takes the Scheduler role; commands of an older broker epoch are refused."),
    channel("agentPing", "{prefix}.agent.{agent_id}.ping", ("Ping", Some("AgentPong")), (Broker, Agent), false,
        "Liveness probe when an agent's heartbeats are late: a killed agent has no responders."),
    channel("schedulerControl", "{prefix}.api.scheduler.control", ("SchedulerControl", Some("SchedulerControlReply")), (Client, Broker), true,
        "An operator turns an agent's Scheduler role on (moving it from the current one) or off."),
    channel("agentChanged", "{prefix}.cluster.agent.{agent_id}", ("AgentChanged", None), (Broker, Client), false,
        "Event: an agent became Scheduler or spare, joined or was lost, as the broker saw it."),
    channel("triggersChanged", "{prefix}.cluster.scheduler", ("TriggersChanged", None), (Broker, Client), false,
        "Event: the deployed triggers stopped firing because no agent can hold the Scheduler role (the reason says why: none connected, all turned off, none under the broker's control, all too unhealthy), or fire again."),
    channel("slotsMissed", "{prefix}.cluster.scheduler.missed", ("SlotsMissed", None), (Agent, Client), false,
        "Event: the Scheduler's misfire policy passed over slots of a job or workflow (how many, in which gap); the active broker's notifier tells `on_missed_slot` targets."),
    channel("brokerChanged", "{prefix}.cluster.broker.{broker_id}", ("BrokerChanged", None), (Broker, Client), false,
        "Event: a broker became active (with its epoch) or stepped down."),
    channel("orderAccepted", "{prefix}.events.{job}.{order_id}.accepted", ("OrderAccepted", None), (Broker, Client), false,
        "Event: the order is durable and waits for a subagent."),
    channel("taskStarted", "{prefix}.events.{job}.{order_id}.started.{subagent_id}", ("TaskStarted", None), (Subagent, Client), false,
        "Event: a subagent has started the order's task. The last token is the publishing subagent, which the server holds to its own id: readers drop one whose `subagent_id` differs."),
    channel("taskLog", "{prefix}.events.{job}.{order_id}.log.{subagent_id}", ("TaskLog", None), (Subagent, Client), false,
        "Event: one line of the task's output, published by the subagent as it comes. The last token is the publishing subagent, which the server holds to its own id: readers drop a line whose `subagent_id` differs."),
    channel("orderChanged", "{prefix}.events.{job}.{order_id}.changed", ("OrderChanged", None), (Broker, Client), false,
        "Event: a workflow order moved: a step was dispatched or finished, or the order was suspended, resumed or is being cancelled ({job} is the workflow)."),
    channel("orderFinished", "{prefix}.events.{job}.{order_id}.finished", ("OrderFinished", None), (Broker, Client), false,
        "Event: the order reached a final state (succeeded, failed or cancelled; a failed workflow order can still be resumed)."),
    channel("notification", "{prefix}.notify.{subject}", ("Notification", None), (Broker, Client), false,
        "A notification of an order that ended (failed or succeeded) for a subject target of the broker's `[[notify.target]]` (`subject = \"{subject}\"`), as the job's or workflow's `notify` rules and the broker's `[notify]` rules say. Unlike every other subject, the payload is JSON: the same body a webhook target is POSTed. Sent at least once by the active broker (a receiver drops a repeated `id`)."),
    channel("audit", "{prefix}.audit.{command}", ("AuditRecord", None), (Broker, Client), false,
        "The audit trail: one record per state-changing command (deploy and undeploy, job pause and resume, order cancel, suspend and resume, subagent and Scheduler switch-overs) once its outcome is known, kept in the JetStream stream `{prefix}_audit` (read by `baton audit`; of the client roles only `admin` may read it)."),
    ]
};

/// The `{parameter}`s a channel address may use, with their descriptions.
pub(super) const PARAMETERS: &[(&str, &str)] = &[
    ("prefix", "The cluster's subject prefix (setting `prefix`, env `BATON_PREFIX`, flag `--prefix`). One subject token."),
    ("subagent_id", "A subagent's id, as in its `Register` message. One subject token."),
    ("agent_id", "An agent's id, as in its `AgentHeartbeat`. One subject token."),
    ("broker_id", "A broker's id, as in its `BrokerHeartbeat`. One subject token."),
    ("job", "The job's name. One subject token."),
    ("order_id", "The order's id, as in `SubmitReply.order_id`."),
    ("subject", "A notification target's `subject` setting: one or more tokens."),
    ("command", "The audited command, as in `AuditRecord.command`: `deploy`, or two tokens such as `order.cancel` or `subagent.disable`."),
];
