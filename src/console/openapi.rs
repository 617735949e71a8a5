//! The console's HTTP API as an OpenAPI 3.1 document (`schemas/console-openapi.json`,
//! written by `baton schemas` beside the wire types' schemas it refers to).

use serde_json::{json, Map, Value};

/// The generated file's name in `schemas/`.
pub const FILE: &str = "console-openapi.json";

/// `$ref` of a generated schema file (`Type.json`, or a definition in one).
fn schema(file: &str) -> Value {
    json!({ "$ref": file })
}

fn reply(description: &str, body: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": body } } })
}

/// The answers every endpoint may give besides its own.
fn errors() -> Map<String, Value> {
    let error = || {
        reply(
            "refused or failed: the broker's error code, or the console's",
            schema("ErrorReply.json"),
        )
    };
    let mut m = Map::new();
    for (status, why) in [
        (
            "400",
            "bad input (bad_request, invalid_param, ...), a query or JSON body that cannot be read",
        ),
        ("403", "forbidden to the console's role"),
        ("404", "no such order, job or workflow"),
        ("405", "a method this endpoint does not take"),
        ("409", "the order's state does not allow it, or a conflict"),
        ("503", "no broker answers, or busy"),
        ("504", "no reply in time"),
    ] {
        let mut e = error();
        e["description"] = json!(why);
        m.insert(status.into(), e);
    }
    m
}

fn operation(
    summary: &str,
    ok: Value,
    body: Option<Value>,
    params: &[(&str, &str, &str)],
) -> Value {
    let mut responses = errors();
    responses.insert("200".into(), ok);
    let mut op = json!({ "summary": summary, "responses": responses });
    let parameters: Vec<Value> = params
        .iter()
        .map(|(name, place, description)| {
            json!({
                "name": name, "in": place, "required": *place == "path",
                "description": description, "schema": { "type": "string" },
            })
        })
        .collect();
    if !parameters.is_empty() {
        op["parameters"] = json!(parameters);
    }
    if let Some(body) = body {
        op["requestBody"] = json!({
            "required": false,
            "content": { "application/json": { "schema": body } },
        });
    }
    op
}

/// The OpenAPI document (pure).
pub fn document() -> Value {
    let id = ("id", "path", "the order's id");
    let page = json!({
        "type": "object",
        "required": ["orders"],
        "properties": {
            "orders": { "type": "array", "items": schema("OrderList.json#/$defs/OrderSummary") },
            "next": { "type": ["string", "null"], "description": "`after` of the next page (`MS.SKIP`); absent or null on the last" },
        },
    });
    let log = json!({
        "type": "object",
        "properties": {
            "lines": { "type": "array", "items": schema("TaskLog.json") },
            "finished": { "anyOf": [schema("OrderFinished.json"), { "type": "null" }] },
        },
    });
    let flag = |name: &str, description: &str| json!({ "type": "object", "properties": { name: { "type": "boolean", "description": description } } });
    let sse = |description: &str| json!({ "description": description, "content": { "text/event-stream": { "schema": { "type": "string" } } } });
    let paths = json!({
        "/api/status": { "get": operation("The cluster: api.status", reply("the status", schema("StatusReply.json")), None, &[]) },
        "/api/orders": { "get": operation(
            "A page of orders, newest first: api.order.list",
            reply("one page", page),
            None,
            &[
                ("job", "query", "only this job's orders"),
                ("workflow", "query", "only this workflow's orders"),
                ("state", "query", "only orders in this state"),
                ("steps", "query", "true: include workflow steps' orders"),
                ("limit", "query", "orders a page, 1 to 1000 (50)"),
                ("after", "query", "the previous page's `next`"),
            ],
        ) },
        "/api/orders/{id}": { "get": operation("One order: api.order.get", reply("the order", schema("OrderInfo.json")), None, &[id]) },
        "/api/orders/{id}/log": { "get": {
            "summary": "An order's log lines from the log stream; with follow=true server-sent events `line` (TaskLog) and `finished` (OrderFinished) until it finishes",
            "parameters": [
                { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                { "name": "follow", "in": "query", "required": false, "schema": { "type": "boolean" } },
            ],
            "responses": { "200": {
                "description": "the lines (JSON), or their events (follow=true)",
                "content": {
                    "application/json": { "schema": log },
                    "text/event-stream": { "schema": { "type": "string" } },
                },
            } },
        } },
        "/api/orders/{id}/cancel": { "post": operation("Cancel: api.order.cancel", reply("the order", schema("OrderInfo.json")), Some(flag("kill", "kill its running task now")), &[id]) },
        "/api/orders/{id}/suspend": { "post": operation("Suspend a workflow order: api.order.suspend", reply("the order", schema("OrderInfo.json")), Some(flag("kill", "kill its running steps now")), &[id]) },
        "/api/orders/{id}/resume": { "post": operation(
            "Resume a workflow order: api.order.resume",
            reply("the order", schema("OrderInfo.json")),
            Some(json!({ "type": "object", "properties": {
                "from": { "type": ["string", "null"], "description": "run again from this step" },
                "force_succeeded": { "type": "boolean", "description": "failed steps count as succeeded" },
            } })),
            &[id],
        ) },
        "/api/jobs": { "get": operation("Deployed jobs and workflows: api.job.list", reply("the inventory", schema("JobList.json")), None, &[]) },
        "/api/jobs/{name}": { "get": operation("One job or workflow: api.job.get", reply("the job", schema("JobInfo.json")), None, &[("name", "path", "its name"), ("next", "query", "how many next fires (10)")]) },
        "/api/jobs/{name}/pause": { "post": operation("Pause its triggers: api.job.control", reply("the switch", schema("JobControlReply.json")), Some(flag("all", "refuse manual submits too")), &[("name", "path", "its name")]) },
        "/api/jobs/{name}/resume": { "post": operation("Resume its triggers: api.job.control", reply("the switch", schema("JobControlReply.json")), None, &[("name", "path", "its name")]) },
        "/api/submit": { "post": operation("Submit an order: api.submit", reply("accepted", schema("SubmitReply.json")), Some(schema("SubmitOrder.json")), &[]) },
        "/api/subagents/{id}/{action}": { "post": operation(
            "Switch a subagent over (action: disable, enable, stop): api.subagent.control",
            reply("its state now", schema("SubagentControlReply.json")),
            None,
            &[("id", "path", "the subagent's id"), ("action", "path", "disable, enable or stop")],
        ) },
        "/api/scheduler/{agent}/{action}": { "post": operation(
            "Move the Scheduler role (action: on, off): api.scheduler.control",
            reply("the agent's role before the change", schema("SchedulerControlReply.json")),
            None,
            &[("agent", "path", "the agent's id"), ("action", "path", "on or off")],
        ) },
        "/api/events": { "get": {
            "summary": "Order and cluster events as they happen: server-sent events `message` with {type: order, kind, job, order, data} (data: OrderAccepted, TaskStarted, OrderChanged or OrderFinished) or {type: subagent|agent|broker|scheduler, data} (SubagentChanged, AgentChanged, BrokerChanged, TriggersChanged); `lagged` when the reader fell behind",
            "responses": { "200": sse("the events") },
        } },
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Baton web console",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP JSON API of `baton console`: each endpoint is one request of the broker's NATS API (see asyncapi.json), with the console role's credentials.",
            "license": { "name": "Apache-2.0" },
        },
        "servers": [{ "url": "http://127.0.0.1:8080" }],
        "paths": paths,
    })
}
