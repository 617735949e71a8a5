//! Baton's roles and what each may publish and subscribe on NATS: one pure
//! table, rendered into the nats-server configuration by [`super::dir`] and
//! printed in the README.
//!
//! | role | publishes | subscribes |
//! |---|---|---|
//! | `broker` | everything under the prefix; JetStream API and KV writes of Baton's buckets and streams | everything under the prefix; `$SRV.>` (service discovery) |
//! | `agent` | its heartbeats, `api.submit`, `cluster.scheduler.missed`; reads `jobs`, `workflows`, `fired`, `switches`, `files`, writes `fired`, `files`; reads and acknowledges the `triggers` stream's consumers, publishes `triggers.dead.*` | `agent.*.>` (role commands, pings), `hb.broker` |
//! | `subagent` (one identity each) | its own heartbeat, `broker.register`/`result`/`leave`, `started` and `log` events in its own name (`events.*.*.log.{id}`) | only `subagent.{id}.>`, its own heartbeat, `hb.broker` |
//! | `client` | `api.submit`, `api.order.>`, `api.status`, `api.status.brokers`, `api.job.list`/`get`, `$SRV.>`; reads the `logs` stream | `events.>`, `cluster.>` |
//! | `admin` | what `client` may, plus `api.deploy`, `api.job.control`, `api.subagent.control`, `api.scheduler.control`; reads the `audit` and `triggers_dead` streams and the `triggers` consumers' info | `events.>`, `cluster.>`, `hb.>` |
//! | `monitor` | `api.status`, `api.status.brokers`, `api.order.get`, `api.order.list`, `api.job.list`/`get`, `$SRV.>`; reads the `logs` stream | `events.>`, `cluster.>`, `hb.>` |
//! | `publisher` (publishes subject triggers' messages) | any subject outside the prefix and the server's own (`$JS`, `$KV`, `$O`, `$SYS`, `$SRV`, `_INBOX`): a deny list | only its reply inbox |
//! | `console` (`baton console`, the web console) | what `client` may, plus `api.job.control`, `api.subagent.control`, `api.scheduler.control`: an operator's switches, never a deploy or the audit trail | `events.>`, `cluster.>`, `hb.>` |
//!
//! Every role also subscribes to its own reply inbox, `_INBOX.<its public
//! key>.>` (see [`inbox_prefix`]), and may answer requests it received
//! (`allow_responses`). Nothing here lets a role other than `broker` create,
//! delete or purge a stream or bucket, or write the leader lease.
//!
//! Architecture invariant: the permissions exist here only; the server
//! configuration, the README table (`baton auth roles`) and the tests all
//! come from [`permissions`]. Its unit tests check what no role may do:
//! command subagents, receive another subagent's tasks, delete or purge
//! state, write the lease.

use std::fmt;

/// One kind of Baton process or user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Broker,
    Agent,
    Subagent,
    Client,
    Admin,
    Monitor,
    /// `baton console`: the web console, an operator without deploy.
    Console,
    /// Whatever publishes the messages of subject triggers (any subject
    /// outside Baton's and the server's own).
    Publisher,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::Broker,
        Role::Agent,
        Role::Subagent,
        Role::Client,
        Role::Admin,
        Role::Monitor,
        Role::Console,
        Role::Publisher,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Broker => "broker",
            Role::Agent => "agent",
            Role::Subagent => "subagent",
            Role::Client => "client",
            Role::Admin => "admin",
            Role::Monitor => "monitor",
            Role::Console => "console",
            Role::Publisher => "publisher",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// What this role is for, one line (for `baton auth init` and the docs).
    pub fn purpose(self) -> &'static str {
        match self {
            Role::Broker => "brokers: decide, store orders, command subagents and agents",
            Role::Agent => "agents: heartbeat, hold the Scheduler role, submit fires",
            Role::Subagent => "one subagent: receive its own tasks, report results",
            Role::Client => "submit, get, list, cancel, suspend, resume orders; watch; read logs",
            Role::Admin => "client, plus deploy, subagent and Scheduler switch-over, audit",
            Role::Monitor => "status, order get and list, events, logs: read only",
            Role::Console => {
                "the web console: client, plus job pause, subagent and Scheduler switch-over"
            }
            Role::Publisher => {
                "publish subject triggers' messages: any subject outside Baton's and the server's own"
            }
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Subjects one identity may publish and subscribe to (NATS wildcards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    /// Never published, whatever `publish` allows (NATS `deny`).
    pub deny_publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May answer requests it received (reply subjects it could not name).
    pub allow_responses: bool,
}

impl Permissions {
    pub fn may_publish(&self, subject: &str) -> bool {
        self.publish.iter().any(|p| subject_matches(p, subject))
            && !self
                .deny_publish
                .iter()
                .any(|p| subject_matches(p, subject))
    }

    pub fn may_subscribe(&self, subject: &str) -> bool {
        // a subscription is allowed when an allowed pattern covers it
        self.subscribe.iter().any(|p| pattern_covers(p, subject))
    }
}

/// The reply inbox prefix of an identity: `_INBOX.<public key>`, so that no
/// identity can read another's replies.
pub fn inbox_prefix(public_key: &str) -> String {
    format!("_INBOX.{public_key}")
}

/// The NATS service discovery subjects (`$SRV.PING|INFO|STATS[.baton[.id]]`):
/// the active broker answers them, clients, admins and monitors ask.
pub const SERVICE_DISCOVERY: &str = "$SRV.>";

/// Names of the JetStream buckets and streams under one prefix.
struct Names<'a>(&'a str);

impl Names<'_> {
    fn bucket(&self, name: &str) -> String {
        format!("{}_{name}", self.0)
    }

    /// The stream behind a KV bucket.
    fn kv_stream(&self, name: &str) -> String {
        format!("KV_{}", self.bucket(name))
    }
}

/// Buckets the broker owns (it creates them at start).
pub const BUCKETS: [&str; 9] = [
    "jobs",
    "clusters",
    "workflows",
    "orders",
    "fired",
    "leader",
    // the Scheduler lease record (issue 16, item 4): only brokers write it
    "scheduler",
    // operators' switches, kept across takeovers (issue 18, item 1)
    "switches",
    // file triggers' records of the files they saw (issue 15, item 1)
    "files",
];
/// Plain streams the broker owns.
pub const STREAMS: [&str; 4] = ["logs", "audit", "triggers", "triggers_dead"];

/// What `role` may do under `prefix`; `id` is the subagent's id (its
/// identity may only receive its own subjects); `public_key` names its inbox.
pub fn permissions(role: Role, prefix: &str, id: Option<&str>, public_key: &str) -> Permissions {
    let p = prefix;
    let names = Names(prefix);
    let inbox = format!("{}.>", inbox_prefix(public_key));
    let js_info = "$JS.API.INFO".to_string();
    let (publish, subscribe) = match role {
        Role::Broker => {
            // `_INBOX.>`: its answers never depend on the server's reply
            // tracking, which a configuration reload resets
            let mut publish = vec![
                format!("{p}.>"),
                "_INBOX.>".into(),
                js_info,
                "$JS.FC.>".into(),
            ];
            for bucket in BUCKETS {
                publish.push(format!("$KV.{}.>", names.bucket(bucket)));
                publish.extend(stream_admin(&names.kv_stream(bucket)));
            }
            for stream in STREAMS {
                publish.extend(stream_admin(&names.bucket(stream)));
            }
            // acknowledging the orders journal's records to its durable
            // notification consumer (`src/notify/`)
            publish.push(format!("$JS.ACK.{}.>", names.kv_stream("orders")));
            // `$SRV.>`: the NATS service discovery requests it answers
            // while active (`bus/service.rs`)
            (
                publish,
                vec![format!("{p}.>"), SERVICE_DISCOVERY.into(), inbox],
            )
        }
        Role::Agent => {
            let mut publish = vec![
                format!("{p}.hb.agent.*"),
                format!("{p}.api.submit"),
                // slots its misfire policy passed over (notifications)
                format!("{p}.cluster.scheduler.missed"),
                format!("$KV.{}.>", names.bucket("fired")),
                format!("$KV.{}.>", names.bucket("files")),
                js_info,
                "$JS.FC.>".into(),
            ];
            // `switches`: the jobs and workflows an operator paused
            for bucket in ["jobs", "workflows", "fired", "switches", "files"] {
                publish.extend(stream_read(&names.kv_stream(bucket)));
            }
            // subject triggers: read the broker's consumers, acknowledge,
            // keep dead letters (`agent/node/subjects.rs`)
            let triggers = names.bucket("triggers");
            publish.extend([
                format!("$JS.API.STREAM.INFO.{triggers}"),
                format!("$JS.API.CONSUMER.INFO.{triggers}.*"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{triggers}.*"),
                format!("$JS.ACK.{triggers}.>"),
                format!("{p}.triggers.dead.*"),
            ]);
            let subscribe = vec![format!("{p}.agent.*.>"), format!("{p}.hb.broker"), inbox];
            (publish, subscribe)
        }
        Role::Subagent => {
            // without an id the identity may act as no subagent at all
            let id = id.unwrap_or("-");
            let publish = vec![
                format!("{p}.hb.subagent.{id}"),
                format!("{p}.broker.register"),
                format!("{p}.broker.result"),
                format!("{p}.broker.leave"),
                // sent by its reaper, with its credentials, once it is dead
                format!("{p}.broker.certificate"),
                // in its own name only: readers check the name against the line
                format!("{p}.events.*.*.started.{id}"),
                format!("{p}.events.*.*.log.{id}"),
                // to check at start that its own subjects reach it
                format!("{p}.subagent.{id}.ping"),
            ];
            // its own heartbeats too: another live process with its id is a twin
            let subscribe = vec![
                format!("{p}.subagent.{id}.>"),
                format!("{p}.hb.broker"),
                format!("{p}.hb.subagent.{id}"),
                inbox,
            ];
            (publish, subscribe)
        }
        Role::Publisher => (vec![">".to_string()], vec![inbox]),
        Role::Client | Role::Admin | Role::Monitor | Role::Console => {
            let mut publish = match role {
                Role::Monitor => vec![
                    format!("{p}.api.status"),
                    format!("{p}.api.status.brokers"),
                    format!("{p}.api.order.get"),
                    format!("{p}.api.order.list"),
                    format!("{p}.api.job.get"),
                    format!("{p}.api.job.list"),
                ],
                _ => vec![
                    format!("{p}.api.submit"),
                    format!("{p}.api.order.>"),
                    format!("{p}.api.status"),
                    format!("{p}.api.status.brokers"),
                    format!("{p}.api.job.get"),
                    format!("{p}.api.job.list"),
                ],
            };
            if role == Role::Admin {
                publish.push(format!("{p}.api.deploy"));
            }
            if matches!(role, Role::Admin | Role::Console) {
                // an operator's switches
                publish.push(format!("{p}.api.job.control"));
                publish.push(format!("{p}.api.subagent.control"));
                publish.push(format!("{p}.api.scheduler.control"));
            }
            if role == Role::Admin {
                publish.extend(stream_read(&names.bucket("audit")));
                // subject triggers: their dead letters, and how far each
                // job's consumer is behind (never its position)
                publish.extend(stream_read(&names.bucket("triggers_dead")));
                let triggers = names.bucket("triggers");
                publish.push(format!("$JS.API.STREAM.INFO.{triggers}"));
                publish.push(format!("$JS.API.CONSUMER.INFO.{triggers}.*"));
            }
            publish.extend(stream_read(&names.bucket("logs")));
            // `nats micro ls|info|stats`: which broker serves the API
            publish.push(SERVICE_DISCOVERY.into());
            publish.push(js_info);
            publish.push("$JS.FC.>".into());
            let mut subscribe = vec![format!("{p}.events.>"), format!("{p}.cluster.>"), inbox];
            // notifications sent to subject targets (`src/notify/`)
            subscribe.push(format!("{p}.notify.>"));
            if role != Role::Client {
                // liveness as it happens, read only
                subscribe.push(format!("{p}.hb.>"));
            }
            (publish, subscribe)
        }
    };
    let deny_publish = match role {
        // anything but Baton's subjects and the server's own
        Role::Publisher => ["$JS.>", "$KV.>", "$O.>", "$SYS.>", "$SRV.>", "_INBOX.>"]
            .into_iter()
            .map(String::from)
            .chain([format!("{p}.>")])
            .collect(),
        _ => Vec::new(),
    };
    Permissions {
        publish,
        deny_publish,
        subscribe,
        allow_responses: matches!(role, Role::Broker | Role::Agent | Role::Subagent),
    }
}

/// Every JetStream API call about one stream (create, update, delete,
/// purge, consumers, messages).
fn stream_admin(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.*.*.{stream}"),
        format!("$JS.API.*.*.{stream}.>"),
        format!("$JS.API.*.*.*.{stream}"),
        format!("$JS.API.*.*.*.{stream}.>"),
    ]
}

/// The JetStream API calls that read one stream: its info, messages, and
/// consumers of its own (ordered consumers, as KV watches and log readers use).
fn stream_read(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
    ]
}

pub use crate::protocol::subjects::{pattern_covers, subject_matches};

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "UPUBLICKEY";

    fn of(role: Role) -> Permissions {
        permissions(role, "baton", Some("sub-1"), PK)
    }

    #[test]
    fn subject_patterns_match_as_nats_does() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches(
            "$JS.API.*.*.KV_x",
            "$JS.API.STREAM.DELETE.KV_x"
        ));
        assert!(!subject_matches(
            "$JS.API.*.*.KV_x",
            "$JS.API.STREAM.DELETE.KV_y"
        ));
        assert!(pattern_covers("a.>", "a.*.c"));
        assert!(pattern_covers("a.*.c", "a.*.c"));
        assert!(!pattern_covers("a.b.c", "a.*.c"));
        assert!(!pattern_covers("a.*", "a.>"));
    }

    #[test]
    fn only_the_broker_commands_subagents_and_agents() {
        for role in Role::ALL {
            let p = of(role);
            let commands = [
                "baton.subagent.sub-1.run",
                "baton.subagent.sub-2.kill",
                "baton.subagent.sub-1.stop",
                "baton.agent.a1.role",
                "baton.hb.broker",
                "baton.cluster.broker.b1",
            ];
            for subject in commands {
                assert_eq!(
                    p.may_publish(subject),
                    role == Role::Broker,
                    "{role} {subject}"
                );
            }
        }
    }

    #[test]
    fn only_a_subagent_reports_and_only_under_its_own_id() {
        for role in Role::ALL {
            let p = of(role);
            let may = matches!(role, Role::Broker | Role::Subagent);
            assert_eq!(p.may_publish("baton.broker.result"), may, "{role}");
            assert_eq!(p.may_publish("baton.broker.register"), may, "{role}");
            assert_eq!(p.may_publish("baton.hb.subagent.sub-1"), may, "{role}");
        }
        let sub = of(Role::Subagent);
        assert!(!sub.may_publish("baton.hb.subagent.sub-2"));
        assert!(sub.may_subscribe("baton.subagent.sub-1.run"));
        assert!(!sub.may_subscribe("baton.subagent.sub-2.run"));
        assert!(!sub.may_subscribe("baton.subagent.*.run"));
        assert!(!sub.may_subscribe("baton.>"));
        assert!(!sub.may_publish("baton.events.job.order.finished"));
        assert!(sub.may_publish("baton.events.job.order.log.sub-1"));
        assert!(sub.may_publish("baton.events.job.order.started.sub-1"));
        assert!(!sub.may_publish("baton.events.job.order.log.sub-2"));
        assert!(!sub.may_publish("baton.events.job.order.log"));
        let nobody = permissions(Role::Subagent, "baton", None, PK);
        assert!(!nobody.may_subscribe("baton.subagent.sub-1.run"));
    }

    #[test]
    fn no_role_but_the_broker_creates_deletes_or_purges_state() {
        for role in Role::ALL {
            let p = of(role);
            for stream in [
                "KV_baton_orders",
                "KV_baton_jobs",
                "KV_baton_leader",
                "baton_logs",
            ] {
                for op in [
                    "STREAM.DELETE",
                    "STREAM.PURGE",
                    "STREAM.CREATE",
                    "STREAM.UPDATE",
                ] {
                    let subject = format!("$JS.API.{op}.{stream}");
                    assert_eq!(
                        p.may_publish(&subject),
                        role == Role::Broker,
                        "{role} {subject}"
                    );
                }
                let delete = format!("$JS.API.STREAM.MSG.DELETE.{stream}");
                assert_eq!(
                    p.may_publish(&delete),
                    role == Role::Broker,
                    "{role} {delete}"
                );
            }
            for bucket in ["baton_leader", "baton_orders", "baton_jobs"] {
                let write = format!("$KV.{bucket}.key");
                assert_eq!(
                    p.may_publish(&write),
                    role == Role::Broker,
                    "{role} {write}"
                );
            }
            assert!(
                !p.may_publish("$JS.API.STREAM.DELETE.KV_other_orders"),
                "{role}"
            );
        }
        assert!(of(Role::Agent).may_publish("$KV.baton_fired.job"));
    }

    #[test]
    fn clients_submit_admins_deploy_monitors_only_read() {
        let (client, admin, monitor) = (of(Role::Client), of(Role::Admin), of(Role::Monitor));
        for subject in [
            "baton.api.submit",
            "baton.api.order.cancel",
            "baton.api.order.resume",
        ] {
            assert!(
                client.may_publish(subject) && admin.may_publish(subject),
                "{subject}"
            );
            assert!(!monitor.may_publish(subject), "{subject}");
        }
        let console = of(Role::Console);
        for subject in [
            "baton.api.job.control",
            "baton.api.scheduler.control",
            "baton.api.subagent.control",
            "baton.api.submit",
            "baton.api.order.cancel",
        ] {
            assert!(console.may_publish(subject), "console {subject}");
        }
        assert!(!console.may_publish("baton.api.deploy"), "no deploy");
        assert!(!console.may_publish("$JS.API.CONSUMER.CREATE.baton_audit.c"));
        assert!(console.may_publish("$JS.API.CONSUMER.CREATE.baton_logs.c"));
        for subject in [
            "baton.api.deploy",
            "baton.api.job.control",
            "baton.api.scheduler.control",
            "baton.api.subagent.control",
        ] {
            assert!(admin.may_publish(subject), "{subject}");
            assert!(
                !client.may_publish(subject) && !monitor.may_publish(subject),
                "{subject}"
            );
            assert!(!of(Role::Agent).may_publish(subject), "{subject}");
            assert!(!of(Role::Subagent).may_publish(subject), "{subject}");
            assert_eq!(
                console.may_publish(subject),
                subject != "baton.api.deploy",
                "console {subject}"
            );
        }
        for p in [&client, &admin, &monitor, &console] {
            assert!(p.may_publish("baton.api.status"));
            assert!(p.may_publish("baton.api.order.get"));
            assert!(p.may_publish("baton.api.job.list"));
            assert!(p.may_publish("baton.api.job.get"));
            assert!(p.may_subscribe("baton.events.>"));
            assert!(p.may_subscribe("baton.cluster.>"));
            assert!(!p.may_subscribe("baton.subagent.sub-1.run"));
            assert!(!p.may_subscribe("baton.>"));
            assert!(!p.may_subscribe("_INBOX.>"));
            assert!(p.may_publish("$JS.API.CONSUMER.CREATE.baton_logs.c.baton.events.*.o.log"));
        }
        assert!(admin.may_publish("$JS.API.CONSUMER.CREATE.baton_audit.c"));
        assert!(!client.may_publish("$JS.API.CONSUMER.CREATE.baton_audit.c"));
    }

    #[test]
    fn every_role_reads_only_its_own_inbox_and_prefix() {
        for role in Role::ALL {
            let p = of(role);
            assert!(p.may_subscribe(&format!("_INBOX.{PK}.abc.*")), "{role}");
            assert!(!p.may_subscribe("_INBOX.UOTHER.abc"), "{role}");
            // the publisher's trade is subjects outside Baton's
            let other_prefix = role != Role::Publisher;
            assert_eq!(p.may_publish("other.api.submit"), !other_prefix, "{role}");
            assert!(!p.may_subscribe("other.events.>"), "{role}");
        }
    }

    #[test]
    fn the_publisher_publishes_anything_but_baton_and_server_subjects() {
        let p = of(Role::Publisher);
        assert!(p.may_publish("orders.created.eu"));
        for denied in [
            "baton.api.submit",
            "baton.triggers.dead.x",
            "$JS.API.STREAM.DELETE.baton_triggers",
            "$JS.ACK.baton_triggers.job_x.1.2.3.4.5",
            "$KV.baton_jobs.x",
            "$SYS.REQ.SERVER.PING",
            "_INBOX.UOTHER.x",
        ] {
            assert!(!p.may_publish(denied), "{denied}");
        }
        assert!(!p.may_subscribe("orders.>"));
        let agent = of(Role::Agent);
        assert!(agent.may_publish("$JS.API.CONSUMER.MSG.NEXT.baton_triggers.job_x"));
        assert!(agent.may_publish("$JS.ACK.baton_triggers.job_x.1.2.3.4.5"));
        assert!(agent.may_publish("baton.triggers.dead.x"));
        assert!(!agent.may_publish("$JS.API.CONSUMER.CREATE.baton_triggers.job_x"));
        assert!(!agent.may_publish("$JS.API.CONSUMER.DELETE.baton_triggers.job_x"));
    }
}
