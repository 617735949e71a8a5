//! The web console in a real browser: headless Chromium (driven through
//! chromedriver with fantoccini) against `baton console` over a real
//! cluster (nats-server, broker, subagents killed with SIGKILL).
//!
//! Chromium and chromedriver come from the OS packages (`nats/install.sh`
//! installs them). Every wait polls the page with a deadline; a failing test
//! saves a screenshot of the page to `target/console-screenshots/` and says
//! where (`CONSOLE_SCREENSHOTS=1` keeps every test's last page).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton::auth::Role;
use common::*;
use fantoccini::{Client, ClientBuilder};
use futures::FutureExt;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Bound on anything the page should show.
const SHOW: Duration = Duration::from_secs(20);
/// How often the page is polled.
const POLL: Duration = Duration::from_millis(50);

/// Fast failure detection, as in the fail-over tests.
const FAST: &[(&str, &str)] = &[
    ("BATON_SUBAGENT__HEARTBEAT_INTERVAL", "100ms"),
    ("BATON_BROKER__HEARTBEAT_INTERVAL", "100ms"),
    ("BATON_BROKER__SUBAGENT_TIMEOUT", "1s"),
];

const JOBS: &str = r#"
[[job]]
name = "hello"
program = "sh"
args = ["-c", "echo hello, $BATON_PARAM_WHO"]
[job.params.who]
default = "world"

[[job]]
name = "ticker"
program = "sh"
args = ["-c", "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.4; done"]

[[job]]
name = "step"
program = "sh"
args = ["-c", "echo step done"]

[[workflow]]
name = "pipeline"
[[workflow.steps]]
name = "build"
job = "step"
[[workflow.steps]]
name = "test-a"
job = "step"
after = ["build"]
[[workflow.steps]]
name = "test-b"
job = "step"
after = ["build"]
[[workflow.steps]]
name = "publish"
job = "step"
after = ["test-a", "test-b"]
"#;

/// One browser and cluster at a time: each test starts a whole cluster and
/// a Chromium, and two at once on a small machine only slow each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A free port on 127.0.0.1.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// Blocks until something accepts connections on `addr`, for at most `limit`.
fn wait_listening(addr: SocketAddr, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {addr} within {limit:?}"
        );
        std::thread::sleep(POLL);
    }
}

fn found(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run nats/install.sh (it installs chromium and chromium-driver)")
        })
}

/// A cluster with three subagents, the console over it, and a headless
/// Chromium on the console's page.
struct Setup {
    h: Harness,
    url: String,
    browser: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Setup {
    async fn start() -> Setup {
        let turn = ONE_AT_A_TIME.lock().await;
        let mut h = cluster_with_env(&["sub-1", "sub-2", "sub-3"], FAST).await;
        deploy(&h.bus, JOBS).await;
        // the console's own identity, made with the folder
        let _ = h.seed(Role::Console, None);
        let addr = free_addr();
        h.cluster
            .spawn("console", &["console", "--listen", &addr.to_string()])
            .expect("spawn console");
        wait_listening(addr, Duration::from_secs(30), "baton console");
        let url = format!("http://{addr}/");

        let chromium = found("chromium");
        let port = free_addr().port();
        let mut driver = Command::new(found("chromedriver"));
        driver
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut driver, 0);
        let driver = driver.spawn().expect("start chromedriver");
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(20),
            "chromedriver",
        );
        let profile = tempfile::Builder::new()
            .prefix("baton-chromium-")
            .tempdir()
            .expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1300,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let webdriver = format!("http://127.0.0.1:{port}");
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(caps);
        let browser = within(
            Duration::from_secs(60),
            "chromium session",
            builder.connect(&webdriver),
        )
        .await
        .expect("chromedriver starts chromium");
        Setup {
            h,
            url,
            browser,
            driver,
            _profile: profile,
            _turn: turn,
        }
    }

    async fn open(&self, hash: &str) {
        let url = format!("{}{hash}", self.url);
        within(SHOW, "open page", self.browser.goto(&url))
            .await
            .expect("page opens");
    }

    /// Evaluates `expr` in the page.
    async fn eval(&self, expr: &str) -> Value {
        let script = format!("return ({expr});");
        let run = self.browser.execute(&script, vec![]);
        within(SHOW, "script", run).await.unwrap_or(Value::Null)
    }

    /// Waits until `expr` is truthy in the page; returns its value.
    async fn wait(&self, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + SHOW;
        loop {
            let value = self.eval(expr).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "the page did not show {what} within {SHOW:?} ({expr})"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `POST path` straight to the console with `content_type` and an
    /// empty JSON object: the response's status line and body.
    fn post(&self, path: &str, content_type: &str) -> String {
        self.http(
            "POST",
            path,
            &format!("Content-Type: {content_type}\r\n"),
            "{}",
        )
    }

    /// `GET path` straight to the console: the response's status line and body.
    fn get(&self, path: &str) -> String {
        self.http("GET", path, "", "")
    }

    /// One HTTP/1.1 request (`headers` each ending in CRLF); the response's
    /// status line, headers and body.
    fn http(&self, method: &str, path: &str, headers: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let host = self.url.trim_start_matches("http://").trim_end_matches('/');
        let mut stream = TcpStream::connect(host).expect("connect to the console");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    }

    /// Clicks the element `css` names, once the page shows it (in one
    /// script, as the pages redraw themselves live).
    async fn click(&self, css: &str) {
        let quoted = serde_json::to_string(css).expect("css");
        let click = format!("(() => {{ const e = document.querySelector({quoted}); if (e) e.click(); return !!e; }})()");
        self.wait(&format!("{css} to click"), &click).await;
    }

    /// Ends the test: when `outcome` is a failure, saves a screenshot of
    /// the page first and prints the processes' logs, then fails.
    async fn finish(self, name: &str, outcome: std::thread::Result<()>) {
        // CONSOLE_SCREENSHOTS=1 keeps the last page of every test, to look at
        if outcome.is_err() || std::env::var_os("CONSOLE_SCREENSHOTS").is_some() {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}.png"));
            match within(SHOW, "screenshot", self.browser.screenshot()).await {
                Ok(png) => match std::fs::write(&file, png) {
                    Ok(()) => eprintln!("screenshot of the page: {}", file.display()),
                    Err(e) => eprintln!("cannot write {}: {e}", file.display()),
                },
                Err(e) => eprintln!("no screenshot: {e}"),
            }
        }
        let Setup {
            h,
            browser,
            mut driver,
            ..
        } = self;
        let _ = tokio::time::timeout(Duration::from_secs(10), browser.close()).await;
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(driver.id() as i32),
            Signal::SIGKILL,
        );
        let _ = driver.wait();
        if let Err(panic) = outcome {
            h.print_logs();
            std::panic::resume_unwind(panic);
        }
    }
}

/// Runs a test's body on a fresh setup, with a screenshot when it fails.
macro_rules! in_browser {
    ($name:expr, |$s:ident| $body:block) => {{
        let $s = Setup::start().await;
        let outcome = std::panic::AssertUnwindSafe(async { $body })
            .catch_unwind()
            .await;
        $s.finish($name, outcome).await;
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_page_shows_the_subagents_and_a_killed_one_lost_at_once() {
    in_browser!("cluster", |s| {
        s.open("#/cluster").await;
        s.wait(
            "three available subagents",
            "document.querySelectorAll('tr[data-subagent][data-state=available]').length === 3",
        )
        .await;
        // polled every 2 s, but nothing changed: the tables stay, no redraw
        s.eval(
            "(() => { document.querySelector('#subagents').dataset.mark = 'kept'; window.polls = 0; \
             const f = window.fetch; window.fetch = (...a) => { if (String(a[0]).includes('/api/status')) window.polls++; return f(...a); }; \
             return true; })()",
        )
        .await;
        s.wait("two polls of the status", "window.polls >= 2").await;
        let kept = s
            .eval("document.querySelector('#subagents').dataset.mark || 'redrawn'")
            .await;
        assert_eq!(kept, "kept", "the cluster page redrew without a change");
        let killed = Instant::now();
        let pid = s.h.cluster.pid("sub-2").expect("sub-2 runs");
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, Signal::SIGKILL).expect("kill -9 sub-2");
        s.wait(
            "sub-2 marked lost",
            "document.querySelector('tr[data-subagent=\"sub-2\"][data-state=lost]') && document.querySelector('[data-lost]')",
        )
        .await;
        eprintln!("sub-2 shown lost {:?} after kill -9", killed.elapsed());
        let banner = s
            .eval("document.querySelector('[data-lost]').textContent")
            .await;
        assert!(banner.as_str().unwrap_or("").contains("sub-2"), "{banner}");

        // what another site's form could send is refused; JSON is not
        let forged = s.post("/api/subagents/sub-1/disable", "text/plain");
        assert!(forged.starts_with("HTTP/1.1 415"), "{forged}");
        let state = s
            .eval("document.querySelector('tr[data-subagent=sub-1]').dataset.state")
            .await;
        assert_eq!(state, "available");
        let json = s.post("/api/subagents/sub-3/disable", "application/json");
        assert!(
            json.starts_with("HTTP/1.1 200") && json.contains("disabled"),
            "{json}"
        );
        s.wait(
            "sub-3 disabled, live",
            "document.querySelector('tr[data-subagent=sub-3][data-state=disabled]')",
        )
        .await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_submitted_from_the_jobs_page_finishes_with_its_log() {
    in_browser!("submit", |s| {
        s.open("#/jobs").await;
        s.wait(
            "the job list",
            "document.querySelector('tr[data-job=hello]')",
        )
        .await;
        s.click("tr[data-job=hello] button[data-action=run]").await;
        s.wait(
            "the parameter form",
            "document.querySelector('#dialog[open] input[data-param=who]')",
        )
        .await;
        s.eval("(document.querySelector('input[data-param=who]').value = 'browser') && true")
            .await;
        s.click("#dialog-confirm").await;
        let order = s
            .wait(
                "the submit's reply",
                "document.querySelector('#dialog-result [data-order-link]')?.dataset.orderLink",
            )
            .await;
        let order = order.as_str().expect("order id").to_string();
        s.click("#dialog-result [data-order-link]").await;
        s.wait(
            "the order succeeded",
            &format!("location.hash.includes('{order}') && document.querySelector('#order-state[data-state=succeeded]')"),
        )
        .await;
        s.wait(
            "its log line",
            "document.querySelector('#log')?.textContent.includes('hello, browser')",
        )
        .await;
        let info = order_info(&s.h.bus, &order).await.expect("the order");
        assert_eq!(info.submitted_by.as_deref(), Some("console"), "{info:?}");

        // the JSON API as curl sees it: a short id reads the log; an unknown
        // one, followed or not, is a 404 at once; what it cannot read is a
        // JSON error; a wrong method is 405
        let short = &order[..8];
        let log = s.get(&format!("/api/orders/{short}/log"));
        assert!(
            log.starts_with("HTTP/1.1 200") && log.contains("hello, browser"),
            "{log}"
        );
        for path in [
            "/api/orders/nosuch/log",
            "/api/orders/nosuch/log?follow=true",
        ] {
            let answer = s.get(path);
            assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
            assert!(answer.contains(r#""code":"not_found""#), "{path}: {answer}");
        }
        let answer = s.get("/api/orders?limit=abc");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            answer.contains(r#"{"error":{"code":"bad_request","message":"the query string"#),
            "{answer}"
        );
        let json = "Content-Type: application/json\r\n";
        let answer = s.http("POST", "/api/submit", json, "{bad");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains(r#""message":"the JSON body"#), "{answer}");
        let answer = s.get("/api/submit");
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        assert!(answer.contains(r#""code":"bad_request""#), "{answer}");
        let last_page = s.get("/api/orders?limit=1000");
        assert!(
            last_page.contains(r#""orders":["#) && !last_page.contains("\"next\""),
            "{last_page}"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_order_shows_its_steps_and_their_subagents_on_the_timeline() {
    in_browser!("workflow", |s| {
        let (finished, _) = run_to_finish(&s.h.bus, "pipeline", Default::default()).await;
        assert_eq!(finished.state, baton::protocol::OrderState::Succeeded);
        s.open(&format!("#/orders/{}", finished.order_id)).await;
        s.wait(
            "four steps drawn",
            "document.querySelectorAll('svg[data-dag] g[data-step][data-state=succeeded]').length === 4",
        )
        .await;
        let rows = s
            .wait(
                "four attempts on the timeline, each with its subagent",
                "(() => { const r = [...document.querySelectorAll('[data-timeline] tr[data-attempt]')]; \
                 return r.length === 4 && r.every((t) => /^sub-[123]$/.test(t.dataset.subagent)) \
                 && r.map((t) => t.dataset.attempt + '@' + t.dataset.subagent); })()",
            )
            .await;
        let rows: Vec<String> = serde_json::from_value(rows).expect("rows");
        for step in ["build", "test-a", "test-b", "publish"] {
            assert!(
                rows.iter().any(|r| r.starts_with(&format!("{step} #1@"))),
                "{rows:?}"
            );
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_order_s_log_is_followed_live_and_actions_ask_first() {
    in_browser!("log", |s| {
        let order = submit(&s.h.bus, "ticker", &[]).await;
        s.open(&format!("#/orders/{order}")).await;
        s.wait(
            "the first line while it runs",
            "document.querySelector('#log')?.textContent.includes('tick 1')",
        )
        .await;
        // lines arrive while the order runs (its last comes 2 s after the first)
        s.wait(
            "lines while it runs",
            "document.querySelector('#order-state[data-state=running]') \
             && !document.querySelector('#log').textContent.includes('tick 6')",
        )
        .await;
        s.wait(
            "the last line and the end",
            "document.querySelector('#log')?.textContent.includes('tick 6') && document.querySelector('#log [data-finished=succeeded]')",
        )
        .await;

        // an action asks first, then shows the broker's reply
        s.open("#/cluster").await;
        s.click("tr[data-subagent=sub-1] button[data-action=disable]")
            .await;
        s.wait(
            "the confirmation",
            "document.querySelector('#dialog[open]')",
        )
        .await;
        let state = s
            .eval("document.querySelector('tr[data-subagent=sub-1]').dataset.state")
            .await;
        assert_eq!(state, "available", "nothing happens before Confirm");
        s.click("#dialog-confirm").await;
        s.wait(
            "the reply",
            "document.querySelector('#dialog-result')?.textContent.includes('disabled')",
        )
        .await;
        s.click("#dialog-back").await;
        s.wait(
            "sub-1 disabled",
            "document.querySelector('tr[data-subagent=sub-1][data-state=disabled]')",
        )
        .await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_page_filters_pages_and_updates_live() {
    in_browser!("orders", |s| {
        for _ in 0..3 {
            run_to_finish(&s.h.bus, "hello", Default::default()).await;
        }
        s.open("#/orders?limit=2").await;
        s.wait(
            "the newest two orders",
            "document.querySelectorAll('#orders tr[data-order]').length === 2",
        )
        .await;
        let first = s
            .eval("[...document.querySelectorAll('#orders tr[data-order]')].map((t) => t.dataset.order)")
            .await;
        s.click("#older").await;
        s.wait(
            "the next page, the oldest order",
            "document.querySelectorAll('#orders tr[data-order]').length === 1 && document.querySelector('#older').disabled",
        )
        .await;
        let older = s
            .eval("document.querySelector('#orders tr[data-order]').dataset.order")
            .await;
        assert!(
            !first.as_array().unwrap().contains(&older),
            "{first} {older}"
        );

        // live: a new order appears on the first page by itself
        s.open("#/orders?job=ticker").await;
        s.wait("an empty, filtered list", "document.querySelector('#orders') && !document.querySelector('#orders tr[data-order]')")
            .await;
        let order = submit(&s.h.bus, "ticker", &[]).await;
        s.wait(
            "the new order, running then succeeded",
            &format!("document.querySelector('#orders tr[data-order=\"{order}\"][data-state=succeeded]')"),
        )
        .await;
        let rows = s
            .eval("document.querySelectorAll('#orders tr[data-order]').length")
            .await;
        assert_eq!(rows, 1, "the filter keeps hello's orders out");
    });
}
