//! `baton order list`: its arguments (WHEN, states), the request they make
//! and the table of the reply.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::bail;
use clap::Args;

use crate::bus::Bus;
use crate::cli::output;
use crate::config::Config;
use crate::protocol::*;

/// The most orders a list may ask for (the broker's cap).
const LIST_MAX: u32 = 10_000;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only orders through this workflow (with --steps, its step orders too)
    #[arg(long, value_name = "WORKFLOW")]
    pub workflow: Option<String>,
    /// Only orders of this job, the orders of workflow steps running it included
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Only orders in this state: accepted, running, suspending, suspended,
    /// cancelling, succeeded, failed or cancelled
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    pub state: Option<OrderState>,
    /// Only orders accepted at or after WHEN: a duration meaning that long
    /// ago (30m, 2h, 1day) or an RFC 3339 time (2026-01-31T08:00:00Z)
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<When>,
    /// Only orders accepted before WHEN (written as for --since)
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub until: Option<When>,
    /// Include the orders that run the steps of workflow orders, and the
    /// orders of a spread order's members
    #[arg(long)]
    pub steps: bool,
    /// At most this many orders [default: 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=LIST_MAX as i64))]
    pub limit: Option<u32>,
    /// Print the reply (an OrderList) as JSON
    #[arg(long)]
    pub json: bool,
}

/// A time from the command line: that long before now, or a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Ago(Duration),
    /// Milliseconds since the Unix epoch.
    At(u64),
}

impl When {
    /// Milliseconds since the Unix epoch, counting back from `now_ms`.
    pub fn at_ms(self, now_ms: u64) -> u64 {
        match self {
            When::Ago(d) => now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            When::At(ms) => ms,
        }
    }
}

/// Parses WHEN: a humantime duration (`90s`, `2h`, `1day`) or an RFC 3339
/// time, with an offset (`2026-01-31T08:00:00+01:00`) or without (UTC).
pub fn parse_when(s: &str) -> Result<When, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(When::Ago(d));
    }
    let ms = chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
        .or_else(|| {
            let t = humantime::parse_rfc3339_weak(s).ok()?;
            let d = t.duration_since(UNIX_EPOCH).ok()?;
            i64::try_from(d.as_millis()).ok()
        });
    match ms {
        Some(ms) if ms >= 0 => Ok(When::At(ms as u64)),
        Some(_) => Err(format!("{s} is before 1970")),
        None => Err(format!(
            "'{s}' is neither a duration (30m, 2h, 1day: that long ago) \
             nor an RFC 3339 time (2026-01-31T08:00:00Z)"
        )),
    }
}

const STATES: [OrderState; 8] = [
    OrderState::Accepted,
    OrderState::Running,
    OrderState::Suspending,
    OrderState::Suspended,
    OrderState::Cancelling,
    OrderState::Succeeded,
    OrderState::Failed,
    OrderState::Cancelled,
];

/// Parses an order state by its name.
pub fn parse_state(s: &str) -> Result<OrderState, String> {
    STATES
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = STATES.iter().map(|state| state.as_str()).collect();
            format!("unknown state '{s}': use one of {}", names.join(", "))
        })
}
/// The request of `order list`, with WHEN counted back from `now_ms`.
pub(super) fn list_request(args: &ListArgs, now_ms: u64) -> anyhow::Result<ListOrders> {
    let since_ms = args.since.map(|w| w.at_ms(now_ms));
    let until_ms = args.until.map(|w| w.at_ms(now_ms));
    if let (Some(since), Some(until)) = (since_ms, until_ms) {
        if since >= until {
            let time =
                |ms| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms));
            bail!(
                "--since ({}) is not before --until ({}), so no order can match; swap them",
                time(since),
                time(until)
            );
        }
    }
    Ok(ListOrders {
        workflow: args.workflow.clone(),
        job: args.job.clone(),
        state: args.state,
        since_ms,
        until_ms,
        steps: args.steps,
        limit: args.limit,
    })
}

pub(super) async fn list(
    config: &Config,
    bus: &Bus,
    request: ListOrders,
    json: bool,
) -> anyhow::Result<()> {
    let reply: OrderList = bus
        .request(
            bus.subjects().order_list(),
            &request,
            config.nats.request_timeout,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    if reply.orders.is_empty() {
        eprintln!(
            "no orders match (the broker lists every unfinished order and the newest finished ones)"
        );
        if let Some(hint) = steps_hint(&request) {
            eprintln!("{hint}");
        }
        return Ok(());
    }
    print!("{}", output::order_list_text(&reply));
    if reply.truncated {
        let shown = match reply.orders.len() {
            1 => "the newest order".to_string(),
            n => format!("the newest {n} orders"),
        };
        eprintln!(
            "showing {shown}; more match: use --limit N (up to {LIST_MAX}) \
             or narrower filters (--since, --state, ...)"
        );
    }
    Ok(())
}

/// When nothing matched a list by workflow without --steps, a hint: the
/// orders running its steps were left out. (A list by job alone has them.)
fn steps_hint(request: &ListOrders) -> Option<String> {
    let workflow = request.workflow.as_ref().filter(|_| !request.steps)?;
    let job = match &request.job {
        Some(job) => format!(" (with job {job})"),
        None => String::new(),
    };
    Some(format!(
        "the orders running the steps of workflow {workflow}{job} are listed only with --steps"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;

    #[test]
    fn when_is_a_duration_ago_or_a_time() {
        assert_eq!(parse_when("1h"), Ok(When::Ago(Duration::from_secs(3600))));
        assert_eq!(parse_when("1h").unwrap().at_ms(10 * HOUR_MS), 9 * HOUR_MS);
        assert_eq!(
            parse_when("2days").unwrap().at_ms(HOUR_MS),
            0,
            "not before 1970"
        );
        let utc = parse_when("2026-01-31T08:00:00Z").unwrap();
        assert_eq!(utc, When::At(1_769_846_400_000));
        assert_eq!(
            utc.at_ms(0),
            1_769_846_400_000,
            "a time does not depend on now"
        );
        assert_eq!(
            parse_when("2026-01-31T09:00:00+01:00"),
            Ok(utc),
            "an offset counts"
        );
        assert_eq!(
            parse_when("2026-01-31T08:00:00.250Z"),
            Ok(When::At(1_769_846_400_250))
        );
        assert_eq!(parse_when("2026-01-31 08:00:00"), Ok(utc), "no offset: UTC");
    }

    #[test]
    fn when_errors_name_both_forms() {
        let e = parse_when("yesterday").unwrap_err();
        assert!(
            e.contains("'yesterday'") && e.contains("30m") && e.contains("RFC 3339"),
            "{e}"
        );
        assert!(parse_when("2026-13-01T00:00:00Z").is_err());
        assert!(parse_when("").is_err());
        assert!(parse_when("1969-12-31T23:00:00Z")
            .unwrap_err()
            .contains("before 1970"));
    }

    #[test]
    fn states_parse_by_name_and_errors_list_them() {
        for state in STATES {
            assert_eq!(parse_state(state.as_str()), Ok(state));
        }
        let e = parse_state("done").unwrap_err();
        assert!(
            e.contains("'done'") && e.contains("suspended, cancelling"),
            "{e}"
        );
    }

    fn list_args(since: Option<&str>, until: Option<&str>) -> ListArgs {
        ListArgs {
            workflow: Some("nightly".into()),
            job: None,
            state: Some(OrderState::Failed),
            since: since.map(|w| parse_when(w).unwrap()),
            until: until.map(|w| parse_when(w).unwrap()),
            steps: true,
            limit: Some(5),
            json: false,
        }
    }

    #[test]
    fn a_list_request_counts_back_from_now() {
        let now = 10 * HOUR_MS;
        let r = list_request(&list_args(Some("2h"), Some("1h")), now).unwrap();
        assert_eq!(r.since_ms, Some(8 * HOUR_MS));
        assert_eq!(r.until_ms, Some(9 * HOUR_MS));
        assert_eq!(r.workflow.as_deref(), Some("nightly"));
        assert_eq!(r.state, Some(OrderState::Failed));
        assert!(r.steps);
        assert_eq!(r.limit, Some(5));
        let none = list_request(&list_args(None, None), now).unwrap();
        assert_eq!((none.since_ms, none.until_ms), (None, None));
    }

    #[test]
    fn an_empty_list_by_workflow_says_step_orders_need_steps() {
        let mut args = list_args(None, None);
        args.steps = false;
        args.job = Some("compile".into());
        let request = list_request(&args, 0).unwrap();
        assert_eq!(
            steps_hint(&request).as_deref(),
            Some("the orders running the steps of workflow nightly (with job compile) are listed only with --steps")
        );
        let with_steps = ListOrders {
            steps: true,
            ..request.clone()
        };
        assert_eq!(steps_hint(&with_steps), None);
        let by_job = ListOrders {
            workflow: None,
            ..request
        };
        assert_eq!(
            steps_hint(&by_job),
            None,
            "a list by job has its step orders"
        );
    }

    #[test]
    fn since_after_until_is_an_error_that_says_so() {
        let e = list_request(&list_args(Some("1h"), Some("2h")), 10 * HOUR_MS).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("--since") && e.contains("swap them"), "{e}");
    }
}
