//! The Broker: the one place that decides. It keeps the registry of subagents
//! from their registrations, heartbeats and probes, holds deployed jobs,
//! subagent clusters and orders, and chooses which subagent runs each task.
//!
//! The decisions are the pure [`core`]'s (`step(input, now) -> effects`);
//! this actor subscribes, turns what arrives into the core's inputs, and
//! carries the effects out (`act.rs`): it publishes, requests and writes to
//! JetStream, feeding each outcome back. Only the queries (an order, the
//! order list, the job inventory, status) are answered here, from the
//! core's state (`requests.rs`, `inventory.rs`). The journal's IO and reading it for a takeover are in
//! `recovery.rs`.

mod act;
pub mod agents;
mod audit;
pub mod colocate;
pub mod core;
mod discovery;
pub mod election;
mod elector;
mod gate;
pub mod health;
mod idempotency;
pub mod inventory;
mod leadership;
pub mod lease;
mod metrics;
pub mod order_book;
pub mod placement;
pub mod probe;
mod recovery;
pub mod registry;
mod requests;
mod retention;
mod scheduler_lease;
#[cfg(test)]
mod sim;
pub mod spread;
mod sweep;
pub mod trigger_stream;

use actix::prelude::*;
use futures::stream::{self, LocalBoxStream, StreamExt};
use tracing::{info, warn};

use crate::bus::{
    Bus, BusError, Kv, KvChange, Received, Replier, Request, SenderProof, StreamLimits,
};
use crate::config::Config;
use crate::protocol::*;
use crate::time::now_ms;
use act::To;
use core::Core;

/// How often the metrics' gauges are read from the core (`metrics.rs`).
const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything that reaches the broker from NATS.
enum Input {
    Submit(Request<SubmitOrder>),
    Deploy(Request<DeployRequest>),
    GetOrder(Request<GetOrder>),
    Cancel(Request<CancelOrder>),
    Status(Request<StatusRequest>),
    Control(Request<SubagentControl>),
    Register(Request<Register>),
    Leave(Request<Leave>),
    Result(Request<TaskResult>),
    Certificate(Request<DeathCertificate>),
    Heartbeat(Received<SubagentHeartbeat>),
    Suspend(Request<SuspendOrder>),
    Resume(Request<ResumeOrder>),
    List(Request<ListOrders>),
    ListJobs(Request<ListJobs>),
    GetJob(Request<GetJob>),
    JobControl(Request<JobControl>),
    Job(KvChange<JobSpec>),
    Cluster(KvChange<ClusterSpec>),
    Workflow(KvChange<WorkflowSpec>),
}

impl Message for Input {
    type Result = ();
}

pub struct Broker {
    bus: Bus,
    config: Config,
    id: String,
    started_at_ms: u64,
    /// What the broker knows, and every decision over it.
    core: Core<To>,
    /// The core's IO and timers under way (`act.rs`).
    in_flight: act::InFlight,
    jobs_kv: Kv<JobSpec>,
    clusters_kv: Kv<ClusterSpec>,
    workflows_kv: Kv<WorkflowSpec>,
    orders_kv: Kv<OrderInfo>,
    switches_kv: Kv<OperatorSwitch>,
    /// Keeps one agent in the Scheduler role.
    elector: Addr<elector::Elector>,
    /// The other brokers and our lease, as the leadership loop last told.
    peers: LeaseNews,
    /// Tells `run_until_signal` the broker cannot go on.
    stopped: Option<tokio::sync::oneshot::Sender<()>>,
    /// Appends the records of state-changing commands (`audit.rs`).
    audit: audit::Audit,
    /// Until when it may act (the core holds the same).
    tenure: lease::Tenure,
    /// The orders journal's retention (`sweep.rs`).
    sweep: sweep::Sweep,
    /// Records the takeover found past their retention, to remove.
    past_retention: Vec<(String, u64)>,
    /// The client API's NATS service: it stops answering `$SRV.*` with us.
    _api: crate::bus::ApiService,
    /// Keeps the subject triggers' stream and consumers; stops with us.
    _trigger_stream: trigger_stream::TriggerStream,
    /// Keeps Baton's stream leaders together, on a JetStream cluster.
    _colocate: Option<colocate::Colocate>,
}

/// Subscribes and starts the broker in the current actix System.
/// A stream's limits from its two settings (`nats.*_retention`, `nats.*_max_bytes`).
fn limits(max_age: std::time::Duration, max_bytes: Option<u64>) -> StreamLimits {
    StreamLimits { max_age, max_bytes }
}

/// The buckets an active broker reads and writes.
struct Stores {
    jobs_kv: Kv<JobSpec>,
    clusters_kv: Kv<ClusterSpec>,
    workflows_kv: Kv<WorkflowSpec>,
    orders_kv: Kv<OrderInfo>,
    switches_kv: Kv<OperatorSwitch>,
}

/// Opens (creating them when missing) every bucket and stream an active
/// broker uses. The bus keeps them open, so the next time costs nothing.
async fn open_stores(config: &Config, bus: &Bus) -> Result<Stores, BusError> {
    let jobs_kv: Kv<JobSpec> = bus.kv(&config.jobs_bucket()).await?;
    let clusters_kv: Kv<ClusterSpec> = bus.kv(&config.clusters_bucket()).await?;
    let workflows_kv: Kv<WorkflowSpec> = bus.kv(&config.workflows_bucket()).await?;
    let orders_kv: Kv<OrderInfo> = bus.kv(&config.orders_bucket()).await?;
    let switches_kv: Kv<OperatorSwitch> = bus.kv(&config.switches_bucket()).await?;
    // agents may read and write it but not create it (see `auth::roles`)
    bus.kv::<crate::protocol::FiredSlot>(&config.fired_bucket())
        .await?;
    bus.kv::<crate::protocol::FileRecord>(&config.files_bucket())
        .await?;
    // task output is kept from now on (see `baton order logs`)
    if let Err(e) = bus
        .ensure_log_stream(
            &config.log_stream(),
            limits(config.nats.log_retention, config.nats.log_max_bytes),
        )
        .await
    {
        warn!(error = %e, "cannot create the log stream; task output is not kept");
    }
    // state-changing commands are recorded from now on (see `baton audit`)
    if let Err(e) = bus
        .ensure_audit_stream(
            &config.audit_stream(),
            limits(config.nats.audit_retention, config.nats.audit_max_bytes),
        )
        .await
    {
        warn!(error = %e, "cannot create the audit stream; commands are not recorded");
    }
    // subject triggers' dead letters are kept from now on
    if let Err(e) = bus
        .ensure_dead_letter_stream(
            &config.dead_letter_stream(),
            bus.subjects().all_trigger_dead(),
            trigger_stream::DEAD_LETTER_LIMITS,
        )
        .await
    {
        warn!(error = %e, "cannot create the dead-letter stream; unmappable trigger messages are not kept");
    }
    Ok(Stores {
        jobs_kv,
        clusters_kv,
        workflows_kv,
        orders_kv,
        switches_kv,
    })
}

/// Opens what a broker will use while it is still a standby (beside its
/// campaign), so its takeover finds everything open: a look-up right after
/// a JetStream node died can go unanswered for seconds, and a standby
/// takes over exactly then. What fails here is left for the takeover.
pub fn prepare(config: &Config, bus: &Bus) {
    let (config, bus) = (config.clone(), bus.clone());
    actix_rt::spawn(async move {
        if let Err(e) = open_stores(&config, &bus).await {
            tracing::debug!(error = %e, "buckets not opened ahead of a takeover; it opens them");
        }
        // read at a takeover within `scheduler_lease::IO_TIMEOUT`
        let bucket = config.scheduler_bucket();
        if let Err(e) = bus.kv::<SchedulerLease>(&bucket).await {
            tracing::debug!(error = %e, "Scheduler lease bucket not opened ahead of a takeover");
        }
    });
}

/// `epoch` is the leadership lease's revision this broker won (see
/// `leadership/`); every command it sends carries it.
pub async fn start(
    config: Config,
    bus: Bus,
    epoch: u64,
    tenure: lease::Tenure,
) -> Result<Addr<Broker>, BusError> {
    let Stores {
        jobs_kv,
        clusters_kv,
        workflows_kv,
        orders_kv,
        switches_kv,
    } = open_stores(&config, &bus).await?;
    // the orders are taken over before anything is served
    let mut recovered = recovery::recover(
        &jobs_kv,
        &clusters_kv,
        &workflows_kv,
        &orders_kv,
        &switches_kv,
        &config.broker,
        now_ms(),
    )
    .await?;
    let past_retention = std::mem::take(&mut recovered.expired);
    let s = bus.subjects().clone();
    // the client API, as the NATS service `baton` (`$SRV.*`)
    let api = bus.service(discovery::service_info(&config, epoch)).await?;
    let inputs: Vec<LocalBoxStream<'static, Input>> = vec![
        api.serve::<SubmitOrder, SubmitReply>("submit", s.submit())
            .await?
            .map(Input::Submit)
            .boxed_local(),
        api.serve::<DeployRequest, DeployReply>("deploy", s.deploy())
            .await?
            .map(Input::Deploy)
            .boxed_local(),
        api.serve::<CancelOrder, OrderInfo>("order-cancel", s.order_cancel())
            .await?
            .map(Input::Cancel)
            .boxed_local(),
        api.serve::<GetOrder, OrderInfo>("order-get", s.order_get())
            .await?
            .map(Input::GetOrder)
            .boxed_local(),
        api.serve::<SuspendOrder, OrderInfo>("order-suspend", s.order_suspend())
            .await?
            .map(Input::Suspend)
            .boxed_local(),
        api.serve::<ResumeOrder, OrderInfo>("order-resume", s.order_resume())
            .await?
            .map(Input::Resume)
            .boxed_local(),
        api.serve::<ListOrders, OrderList>("order-list", s.order_list())
            .await?
            .map(Input::List)
            .boxed_local(),
        api.serve::<StatusRequest, StatusReply>("status", s.status())
            .await?
            .map(Input::Status)
            .boxed_local(),
        api.serve::<ListJobs, JobList>("job-list", s.job_list())
            .await?
            .map(Input::ListJobs)
            .boxed_local(),
        api.serve::<GetJob, JobInfo>("job-get", s.job_get())
            .await?
            .map(Input::GetJob)
            .boxed_local(),
        api.serve::<JobControl, JobControlReply>("job-control", s.job_control())
            .await?
            .map(Input::JobControl)
            .boxed_local(),
        api.serve::<SubagentControl, SubagentControlReply>(
            "subagent-control",
            s.subagent_control(),
        )
        .await?
        .map(Input::Control)
        .boxed_local(),
        bus.serve(s.register())
            .await?
            .map(Input::Register)
            .boxed_local(),
        bus.serve(s.leave()).await?.map(Input::Leave).boxed_local(),
        bus.serve(s.result())
            .await?
            .map(Input::Result)
            .boxed_local(),
        bus.serve(s.certificate())
            .await?
            .map(Input::Certificate)
            .boxed_local(),
        bus.listen(s.subagent_heartbeats())
            .await?
            .map(Input::Heartbeat)
            .boxed_local(),
        jobs_kv.watch().await?.map(Input::Job).boxed_local(),
        clusters_kv.watch().await?.map(Input::Cluster).boxed_local(),
        workflows_kv
            .watch()
            .await?
            .map(Input::Workflow)
            .boxed_local(),
    ];
    let id = config.broker_id();
    let started_at_ms = now_ms();
    let audit = audit::Audit::new(bus.clone(), id.clone());
    let elector = elector::start(
        config.clone(),
        audit.clone(),
        bus.clone(),
        &api,
        id.clone(),
        epoch,
        tenure.clone(),
    )
    .await?;
    info!(broker = %id, prefix = %s.prefix(), epoch, "broker active");
    // orders without a request id get ids unique to this broker's run
    let id_seed = uuid::Uuid::now_v7().as_u64_pair().1;
    let config_ = config.clone();
    let tenure_ = tenure.clone();
    let core = Core::new(
        id.clone(),
        config_,
        epoch,
        tenure,
        recovered,
        id_seed,
        act::now(),
    );
    let trigger_stream = trigger_stream::start(bus.clone(), &config);
    let colocate = colocate::start(bus.clone(), &config);
    Ok(Broker::create(move |ctx| {
        ctx.add_stream(stream::select_all(inputs));
        let (in_flight, outcomes) = act::InFlight::new();
        ctx.add_stream(outcomes);
        Broker {
            bus,
            config,
            id,
            started_at_ms,
            core,
            in_flight,
            jobs_kv,
            clusters_kv,
            workflows_kv,
            orders_kv,
            switches_kv,
            elector,
            peers: LeaseNews::default(),
            stopped: None,
            audit,
            tenure: tenure_,
            sweep: sweep::Sweep::default(),
            past_retention,
            _api: api,
            _trigger_stream: trigger_stream,
            _colocate: colocate,
        }
    }))
}

impl Actor for Broker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.config.broker.heartbeat_interval, |act, _| {
            if act.acting() {
                act.publish_heartbeat()
            }
        });
        ctx.run_interval(self.config.broker.check_interval, |act, _| {
            act.step(core::Input::Check)
        });
        self.refresh_gauges();
        ctx.run_interval(GAUGES_EVERY, |act, _| act.refresh_gauges());
        // the core's first effects: the deadline for inherited tasks'
        // subagents, and workflow orders picked up where they were
        self.flush();
        let past = std::mem::take(&mut self.past_retention);
        self.start_sweeps(past, ctx);
    }
}

impl Input {
    /// What it asks, when the sender matters, who sent it, and where to answer.
    fn asked(&self) -> Option<(gate::Asked<'_>, &SenderProof, Option<&Replier>)> {
        use gate::Asked;
        Some(match self {
            Input::Deploy(r) => (Asked::Admin, &r.sender, Some(&r.replier)),
            Input::Control(r) => (Asked::Switch, &r.sender, Some(&r.replier)),
            Input::JobControl(r) => (Asked::Switch, &r.sender, Some(&r.replier)),
            Input::Register(r) => {
                let asked = Asked::FromSubagent(&r.body.subagent_id);
                (asked, &r.sender, Some(&r.replier))
            }
            Input::Leave(r) => {
                let asked = Asked::FromSubagent(&r.body.subagent_id);
                (asked, &r.sender, Some(&r.replier))
            }
            Input::Result(r) => {
                let asked = Asked::FromSubagent(&r.body.subagent_id);
                (asked, &r.sender, Some(&r.replier))
            }
            Input::Certificate(r) => {
                let asked = Asked::FromSubagent(&r.body.subagent_id);
                (asked, &r.sender, Some(&r.replier))
            }
            Input::Heartbeat(h) => (Asked::FromSubagent(&h.body.subagent_id), &h.sender, None),
            _ => return None,
        })
    }
}

impl StreamHandler<Input> for Broker {
    fn handle(&mut self, input: Input, ctx: &mut Self::Context) {
        // what is deployed is known whether acting or not
        use core::SpecChange;
        let change = match input {
            Input::Job(c) => SpecChange::Job(c.key, c.value),
            Input::Cluster(c) => SpecChange::Cluster(c.key, c.value),
            Input::Workflow(c) => SpecChange::Workflow(c.key, c.value),
            input => return self.serve(input, ctx),
        };
        self.step(core::Input::Spec(change));
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        warn!("all broker subscriptions ended; stopping");
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.send(());
        }
        ctx.stop();
    }
}

impl Broker {
    /// A request or heartbeat: dropped unless acting, refused unless the
    /// gate admits its sender, else the core's.
    fn serve(&mut self, input: Input, ctx: &mut Context<Self>) {
        if !self.acting() {
            // no answer: the client asks again, and the next broker answers
            metrics::dropped("not_acting");
            return;
        }
        if let Some((asked, sender, replier)) = input.asked() {
            if let Err(why) = gate::admits(asked, sender.get()) {
                if self.bus.stats().count_refused() {
                    let refused = self.bus.stats().refused();
                    warn!(asked = ?asked, %why, refused, "message refused (logged at the 1st, 2nd, 4th, 8th... refusal)");
                }
                if let Some(replier) = replier {
                    let to = To::answering(input.audited())(replier.clone());
                    let refusal = core::Refusal::Forbidden(why.to_string());
                    self.send_reply(&to, core::Reply::Error(refusal.reply()));
                }
                return;
            }
        }
        // a state-changing command is audited with its reply (`act::To`)
        let to = To::answering(input.audited());
        let input = match input {
            Input::Submit(r) => {
                let by = submitter(&r);
                core::Input::Submit(to(r.replier), r.body, by)
            }
            Input::Deploy(r) => core::Input::Deploy(to(r.replier), r.body),
            Input::Cancel(r) => core::Input::Cancel(to(r.replier), r.body),
            Input::Control(r) => {
                let by = r.sender.get().describe();
                core::Input::Control(to(r.replier), r.body, by)
            }
            Input::JobControl(r) => {
                let by = r.sender.get().describe();
                core::Input::JobControl(to(r.replier), r.body, by)
            }
            Input::Register(r) => core::Input::Register(to(r.replier), r.body),
            Input::Leave(r) => core::Input::Leave(to(r.replier), r.body),
            Input::Result(r) => core::Input::Result(to(r.replier), r.body),
            Input::Certificate(r) => core::Input::Certificate(to(r.replier), r.body),
            Input::Heartbeat(h) => core::Input::Heartbeat(h.body),
            Input::Suspend(r) => core::Input::Suspend(to(r.replier), r.body),
            Input::Resume(r) => core::Input::Resume(to(r.replier), r.body),
            // queries: read, not decided
            Input::GetOrder(r) => return self.on_get_order(r, ctx),
            Input::Status(r) => return self.on_status(r, ctx),
            Input::List(r) => return self.on_list(r),
            Input::ListJobs(r) => return self.on_list_jobs(r),
            Input::GetJob(r) => return self.on_get_job(r),
            Input::Job(_) | Input::Workflow(_) | Input::Cluster(_) => return,
        };
        self.step(input);
    }
}

/// The identity that signed a client's submit, verified (tens of
/// microseconds); a Scheduler's fire names its trigger instead, and is not
/// checked.
fn submitter(r: &Request<SubmitOrder>) -> Option<String> {
    match r.body.slot_ms {
        Some(_) => None,
        None => match r.sender.get() {
            crate::auth::Sender::Verified(identity) => Some(identity.name.clone()),
            _ => None,
        },
    }
}

impl Broker {
    /// Whether its lease still holds by its own clock (see [`Core::acting`]).
    fn acting(&mut self) -> bool {
        self.core.at(act::now()).acting()
    }

    fn publish_heartbeat(&mut self) {
        let hb = BrokerHeartbeat {
            broker_id: self.id.clone(),
            sent_at_ms: now_ms(),
            protocol: PROTOCOL_VERSION,
            epoch: self.core.epoch,
            role: BrokerRole::Active,
            precedence: self.config.broker.precedence,
            lease_age_ms: self.peers.lease_age_ms(),
            instance: leadership::instance().to_string(),
        };
        self.bus
            .post_signed(self.bus.subjects().broker_heartbeat(), &hb);
    }
}

pub use leadership::run_until_signal;

/// The broker lost (or gave up) the leadership lease: it stops acting at
/// once. Its subscriptions end with it; unfinished IO is dropped (nothing
/// unstored was acknowledged), and the next active broker rebuilds the
/// state from JetStream.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StepDown;

impl Handler<StepDown> for Broker {
    type Result = ();

    fn handle(&mut self, _: StepDown, ctx: &mut Self::Context) {
        info!(broker = %self.id, epoch = self.core.epoch, "broker stepping down");
        self.elector.do_send(elector::Stop);
        self.stopped = None;
        ctx.stop();
    }
}

/// From the leadership loop: when the lease was last renewed, and the other
/// brokers heard from (for `status` and heartbeats).
#[derive(Message, Default, Clone)]
#[rtype(result = "()")]
pub struct LeaseNews {
    pub renewed_at: Option<std::time::Instant>,
    pub peers: Vec<BrokerStatus>,
}

impl LeaseNews {
    fn lease_age_ms(&self) -> Option<u64> {
        self.renewed_at.map(|t| t.elapsed().as_millis() as u64)
    }

    /// Every broker: this one first, then the others by id.
    fn brokers(&self, me: BrokerStatus) -> Vec<BrokerStatus> {
        let mut all = vec![me];
        all.extend(self.peers.iter().cloned());
        all
    }
}

impl Handler<LeaseNews> for Broker {
    type Result = ();

    fn handle(&mut self, news: LeaseNews, _: &mut Self::Context) {
        self.peers = news;
    }
}

/// Asks the broker to say when it stops by itself.
pub(crate) struct NotifyStop(tokio::sync::oneshot::Sender<()>);

impl Message for NotifyStop {
    type Result = ();
}

impl Handler<NotifyStop> for Broker {
    type Result = ();

    fn handle(&mut self, msg: NotifyStop, _: &mut Self::Context) {
        self.stopped = Some(msg.0);
    }
}
