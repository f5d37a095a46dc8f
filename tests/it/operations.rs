//! Operations (issue 19): Lambda logs and metrics that join up — every line
//! logged while a record is handled names its invocation, the cold start is
//! marked and counted once, and `batchItemFailures` lists an id once.

use std::time::Duration;

use sqs_worker::telemetry::{LogFormat, log_subscriber};
use sqs_worker::{Error, Message};
use sqs_worker_core::runner::Engine;
use sqs_worker_core::runner::observe::emf::EmfRecorder;
use sqs_worker_lambda::LambdaService;
use sqs_worker_lambda::testing::{context, event, failed_ids, record};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn always_fails(_m: Message) -> Result<(), Error> {
    Err(Error::msg("downstream unavailable"))
}

#[tokio::test]
async fn a_record_delivered_twice_in_one_event_is_listed_once() {
    let svc = LambdaService::new(Engine::new(always_fails));
    let ev = event([record("dup", "a"), record("other", "b"), record("dup", "a")]);
    let response = svc.handle(ev, &context(TIMEOUT)).await.unwrap();
    let mut ids = failed_ids(&response);
    ids.sort_unstable();
    assert_eq!(ids, ["dup", "other"]);
}

/// Log lines written to a file (`&File` writes: the subscriber appends,
/// the test reads the file back).
struct Capture {
    path: std::path::PathBuf,
    file: std::sync::Arc<std::fs::File>,
}

impl Capture {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(common::unique(name));
        let file = std::sync::Arc::new(std::fs::File::create(&path).unwrap());
        Self { path, file }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }
}

/// The JSON lines `capture` holds whose message is `message`.
fn lines_saying(capture: &Capture, message: &str) -> Vec<serde_json::Value> {
    capture
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == message)
        .collect()
}

/// The value of `field` in the first span of `line`'s span list that has it.
fn span_field<'a>(line: &'a serde_json::Value, field: &str) -> Option<&'a serde_json::Value> {
    line["spans"].as_array()?.iter().find_map(|s| s.get(field))
}

#[tokio::test]
async fn handler_lines_carry_the_request_id_trace_id_and_cold_start() {
    let capture = Capture::new("operations-logs");
    let _logs = tracing::subscriber::set_default(log_subscriber(
        LogFormat::Json,
        capture.file.clone(),
        false,
    ));
    let emf = EmfRecorder::with_service("ns", "orders");
    let _metrics = metrics::set_default_local_recorder(&emf);

    let svc = LambdaService::new(Engine::new(|m: Message| async move {
        tracing::info!(id = m.id(), "handling");
        Ok::<(), Error>(())
    }));
    let mut cold = context(TIMEOUT);
    cold.xray_trace_id = Some("Root=1-5759e988-bd862e3fe1be46a994272793".to_owned());
    let warm = context(TIMEOUT);
    for (ctx, id) in [(&cold, "first"), (&warm, "second"), (&warm, "third")] {
        let response = svc.handle(event([record(id, "{}")]), ctx).await.unwrap();
        assert!(failed_ids(&response).is_empty());
    }

    let lines = lines_saying(&capture, "handling");
    assert_eq!(lines.len(), 3, "{}", capture.text());
    let first = &lines[0];
    assert_eq!(first["id"], "first");
    assert_eq!(
        span_field(first, "faas.invocation_id").unwrap(),
        cold.request_id.as_str()
    );
    assert_eq!(
        span_field(first, "xray_trace_id").unwrap(),
        "Root=1-5759e988-bd862e3fe1be46a994272793"
    );
    assert_eq!(span_field(first, "cold_start").unwrap(), true);
    // The message span is there too: the line joins to its message.
    assert_eq!(span_field(first, "messaging.message.id").unwrap(), "first");
    for warm_line in &lines[1..] {
        assert_eq!(
            span_field(warm_line, "faas.invocation_id").unwrap(),
            warm.request_id.as_str()
        );
        assert!(span_field(warm_line, "cold_start").is_none(), "{warm_line}");
        assert!(
            span_field(warm_line, "xray_trace_id").is_none(),
            "{warm_line}"
        );
    }

    // One cold start counted, whatever the number of invocations.
    let mut out = Vec::new();
    emf.flush_to(&mut out).unwrap();
    let counted: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|l| l.get("sqs_worker_lambda_cold_starts_total").cloned())
        .collect();
    assert_eq!(counted, [serde_json::json!(1)]);
}

// ---- ECS task scale-in protection, against a fake ECS agent on loopback ----

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use sqs_worker::poller::{Poller, ScaleInProtection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fake of the ECS agent's task protection endpoint: records each PUT's
/// `ProtectionEnabled` and `ExpiresInMinutes`, answers 200 (or 500 while
/// `failing`).
/// One PUT: `ProtectionEnabled`, `ExpiresInMinutes`.
type Call = (bool, Option<u64>);

/// A running poller.
type RunTask = tokio::task::JoinHandle<
    Result<sqs_worker::poller::RunSummary, sqs_worker::poller::PollerError>,
>;

#[derive(Clone, Default)]
struct FakeAgent {
    calls: Arc<Mutex<Vec<Call>>>,
    failing: Arc<AtomicBool>,
}

impl FakeAgent {
    /// Serves on loopback; returns the `ECS_AGENT_URI` to use.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let agent = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(agent.clone().answer(stream));
            }
        });
        format!("http://{addr}/api/task-1234")
    }

    async fn answer(self, mut stream: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let body = loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the request ended early");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                assert!(
                    head.starts_with("PUT /api/task-1234/task-protection/v1/state HTTP/1.1"),
                    "{head}"
                );
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    break body.to_owned();
                }
            }
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let call = (
            v["ProtectionEnabled"].as_bool().unwrap(),
            v["ExpiresInMinutes"].as_u64(),
        );
        self.calls.lock().unwrap().push(call);
        let (status, answer) = if self.failing.load(Ordering::SeqCst) {
            (
                "500 Internal Server Error",
                r#"{"error":{"Code":"ServerException"}}"#,
            )
        } else {
            ("200 OK", r#"{"protection":{"ProtectionEnabled":true}}"#)
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{answer}",
            answer.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

async fn send_n(client: &aws_sdk_sqs::Client, url: &str, n: usize) {
    for start in (0..n).step_by(10) {
        let entries = (start..n.min(start + 10))
            .map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(format!("m{i}"))
                    .build()
                    .unwrap()
            })
            .collect();
        client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }
}

/// Waits for `cond`, at most `limit` (generous: the machine may be loaded).
async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a poller on `url` with protection through `agent_uri`; the handler
/// counts messages into `handled`. Returns the stop sender and the task.
fn start_poller(
    client: &aws_sdk_sqs::Client,
    url: &str,
    agent_uri: String,
    handled: Arc<AtomicUsize>,
) -> (tokio::sync::oneshot::Sender<()>, RunTask) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let poller = Poller::builder(url, move |_m: Message| {
        let handled = handled.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            handled.fetch_add(1, Ordering::SeqCst);
            Ok::<(), Error>(())
        }
    })
    .client(client.clone())
    .receivers(1)
    .wait_time(Duration::from_secs(1))
    .scale_in_protection(ScaleInProtection::new(agent_uri).idle_after(Duration::from_millis(600)))
    .shutdown_signal(async move {
        let _ = rx.await;
    })
    .build()
    .unwrap();
    (tx, tokio::spawn(poller.run()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_protection_follows_the_load_with_few_calls() {
    let client = common::sqs().await;
    let url = common::queue(&client, "protect").await;
    let agent = FakeAgent::default();
    let uri = agent.start().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let (stop, task) = start_poller(&client, &url, uri, handled.clone());

    // Idle from the start: the task stays unprotected, nothing is called.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(agent.calls(), []);

    send_n(&client, &url, 40).await;
    until(Duration::from_secs(60), "protected while busy", || {
        agent.calls().first() == Some(&(true, Some(10)))
    })
    .await;
    until(Duration::from_secs(60), "40 messages handled", || {
        handled.load(Ordering::SeqCst) == 40
    })
    .await;
    until(Duration::from_secs(60), "unprotected once idle", || {
        agent.calls().last().is_some_and(|c| !c.0)
    })
    .await;
    let calls = agent.calls();
    // State changes only: alternating, never one call per message.
    assert!(calls.windows(2).all(|w| w[0].0 != w[1].0), "{calls:?}");
    assert!(
        calls.len() <= 6,
        "{} calls for 40 messages: {calls:?}",
        calls.len()
    );
    // Unprotecting sends no expiry; protecting always does.
    assert!(
        calls.iter().all(|(on, exp)| *on == exp.is_some()),
        "{calls:?}"
    );

    // Idle again: no further calls.
    let before = agent.calls().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(agent.calls().len(), before);
    let _ = stop.send(());
    let summary = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summary.succeeded, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erroring_agent_does_not_stop_processing() {
    let client = common::sqs().await;
    let url = common::queue(&client, "protect-err").await;
    let agent = FakeAgent::default();
    agent.failing.store(true, Ordering::SeqCst);
    let uri = agent.start().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let (stop, task) = start_poller(&client, &url, uri, handled.clone());

    send_n(&client, &url, 30).await;
    until(Duration::from_secs(60), "30 messages handled", || {
        handled.load(Ordering::SeqCst) == 30
    })
    .await;
    until(Duration::from_secs(30), "the agent was asked", || {
        !agent.calls().is_empty()
    })
    .await;
    // Still receiving and handling after the agent's failures.
    agent.failing.store(false, Ordering::SeqCst);
    send_n(&client, &url, 10).await;
    until(Duration::from_secs(60), "40 messages handled", || {
        handled.load(Ordering::SeqCst) == 40
    })
    .await;
    let _ = stop.send(());
    let summary = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summary.succeeded, 40);
    // Failures back off (1 s, 2 s, …): a handful of calls, not one per tick.
    assert!(agent.calls().len() <= 10, "{:?}", agent.calls());
}
