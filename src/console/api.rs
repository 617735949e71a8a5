//! The console's JSON endpoints: each is one request of the broker's NATS
//! API, its reply passed on as JSON (README: Web console lists them).
//! A refusal keeps the broker's error code (`{"error": {"code",
//! "message"}}`) with an HTTP status for it (`http::error_status`).

use actix_web::{web, HttpResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::http::{cut_page, error_status, list_query, OrderQuery};
use super::Console;
use crate::protocol::*;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/api/status").route(web::get().to(status)))
        .service(resource("/api/orders").route(web::get().to(orders)))
        .service(resource("/api/orders/{id}").route(web::get().to(order)))
        .service(resource("/api/orders/{id}/{action}").route(web::post().to(order_action)))
        .service(resource("/api/jobs").route(web::get().to(jobs)))
        .service(resource("/api/jobs/{name}").route(web::get().to(job)))
        .service(resource("/api/jobs/{name}/{action}").route(web::post().to(job_action)))
        .service(resource("/api/submit").route(web::post().to(submit)))
        .service(resource("/api/subagents/{id}/{action}").route(web::post().to(subagent_action)))
        .service(
            resource("/api/scheduler/{agent}/{action}").route(web::post().to(scheduler_action)),
        );
}

impl Console {
    /// Asks the broker `subject` and answers with its reply as JSON.
    async fn ask<Req, Resp>(&self, subject: String, request: &Req) -> HttpResponse
    where
        Req: Serialize,
        Resp: DeserializeOwned + Serialize,
    {
        match self
            .bus
            .request::<Req, Resp>(subject, request, self.timeout)
            .await
        {
            Ok(reply) => HttpResponse::Ok().json(reply),
            Err(e) => refused(&e),
        }
    }
}

pub(super) fn refused(e: &crate::bus::BusError) -> HttpResponse {
    let (status, body) = error_status(e);
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    HttpResponse::build(status).json(body)
}

/// A request the console itself refuses (400), in the broker's error shape.
fn bad_request(message: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(ErrorReply::new(ErrorCode::BadRequest, message))
}

async fn status(c: web::Data<Console>) -> HttpResponse {
    let s = c.bus.subjects().status();
    c.ask::<_, StatusReply>(s, &StatusRequest::default()).await
}

/// A page of orders, newest first: `{"orders": [...], "next": "MS.SKIP"}`
/// (`next` absent on the last page).
async fn orders(c: web::Data<Console>, q: web::Query<OrderQuery>) -> HttpResponse {
    let request = match list_query(&q) {
        Ok(request) => request,
        Err(why) => return bad_request(why),
    };
    let subject = c.bus.subjects().order_list();
    let list = c
        .bus
        .request::<_, OrderList>(subject, &request.list, c.timeout);
    match list.await {
        Ok(list) => {
            let (orders, next) = cut_page(&request, list.orders, list.truncated);
            let mut page = serde_json::json!({ "orders": orders });
            if let Some(next) = next {
                // absent on the last page
                page["next"] = next.text().into();
            }
            HttpResponse::Ok().json(page)
        }
        Err(e) => refused(&e),
    }
}

async fn order(c: web::Data<Console>, id: web::Path<String>) -> HttpResponse {
    let get = GetOrder {
        order_id: id.into_inner(),
    };
    let s = c.bus.subjects().order_get();
    c.ask::<_, OrderInfo>(s, &get).await
}

/// The body of an order action; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OrderActionBody {
    kill: bool,
    from: Option<String>,
    force_succeeded: bool,
}

/// `cancel`, `suspend` or `resume` an order; the reply is the order.
async fn order_action(
    c: web::Data<Console>,
    path: web::Path<(String, String)>,
    body: Option<web::Json<OrderActionBody>>,
) -> HttpResponse {
    let (order_id, action) = path.into_inner();
    let body = body.map(web::Json::into_inner).unwrap_or_default();
    let s = c.bus.subjects().clone();
    match action.as_str() {
        "cancel" => {
            let kill = body.kill;
            let request = CancelOrder { order_id, kill };
            c.ask::<_, OrderInfo>(s.order_cancel(), &request).await
        }
        "suspend" => {
            let kill = body.kill;
            let request = SuspendOrder { order_id, kill };
            c.ask::<_, OrderInfo>(s.order_suspend(), &request).await
        }
        "resume" => {
            let request = ResumeOrder {
                order_id,
                from: body.from.filter(|f| !f.is_empty()),
                force_succeeded: body.force_succeeded,
            };
            c.ask::<_, OrderInfo>(s.order_resume(), &request).await
        }
        other => bad_request(format!(
            "order action {other:?}: use cancel, suspend or resume"
        )),
    }
}

async fn jobs(c: web::Data<Console>) -> HttpResponse {
    let s = c.bus.subjects().job_list();
    c.ask::<_, JobList>(s, &ListJobs {}).await
}

#[derive(Debug, Deserialize)]
struct JobQuery {
    next: Option<u32>,
}

async fn job(
    c: web::Data<Console>,
    name: web::Path<String>,
    q: web::Query<JobQuery>,
) -> HttpResponse {
    let get = GetJob {
        name: name.into_inner(),
        next: q.next,
    };
    let s = c.bus.subjects().job_get();
    c.ask::<_, JobInfo>(s, &get).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PauseBody {
    all: bool,
}

/// `pause` or `resume` a job or workflow (its triggers).
async fn job_action(
    c: web::Data<Console>,
    path: web::Path<(String, String)>,
    body: Option<web::Json<PauseBody>>,
) -> HttpResponse {
    let (name, action) = path.into_inner();
    let pause = match action.as_str() {
        "pause" => true,
        "resume" => false,
        other => return bad_request(format!("job action {other:?}: use pause or resume")),
    };
    let all = body.is_some_and(|b| b.all) && pause;
    let control = JobControl { name, pause, all };
    let s = c.bus.subjects().job_control();
    c.ask::<_, JobControlReply>(s, &control).await
}

/// Submits an order: the body is `api.submit`'s (`{"job", "params"}`).
async fn submit(c: web::Data<Console>, body: web::Json<SubmitOrder>) -> HttpResponse {
    let s = c.bus.subjects().submit();
    c.ask::<_, SubmitReply>(s, &body.into_inner()).await
}

async fn subagent_action(c: web::Data<Console>, path: web::Path<(String, String)>) -> HttpResponse {
    let (subagent_id, action) = path.into_inner();
    let action = match action.as_str() {
        "disable" => SubagentAction::Disable,
        "enable" => SubagentAction::Enable,
        "stop" => SubagentAction::Stop,
        other => {
            return bad_request(format!(
                "subagent action {other:?}: use disable, enable or stop"
            ))
        }
    };
    let control = SubagentControl {
        subagent_id,
        action,
    };
    let s = c.bus.subjects().subagent_control();
    c.ask::<_, SubagentControlReply>(s, &control).await
}

async fn scheduler_action(
    c: web::Data<Console>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (agent_id, action) = path.into_inner();
    let action = match action.as_str() {
        "on" => SchedulerAction::On,
        "off" => SchedulerAction::Off,
        other => return bad_request(format!("scheduler action {other:?}: use on or off")),
    };
    let control = SchedulerControl { agent_id, action };
    let s = c.bus.subjects().scheduler_control();
    c.ask::<_, SchedulerControlReply>(s, &control).await
}
