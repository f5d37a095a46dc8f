//! Workload 4, cold start: a fresh process of a Lambda function (the
//! `orders` example) against a tiny fake Lambda Runtime API served here:
//! time from spawn to its first `GET /invocation/next`, and to the response
//! of the first event (10 SQS records, one failing) posted back, and the
//! process's peak RSS (`VmHWM`) by then. The floor, alternating with it round
//! by round: `plain-lambda` (this crate's `src/bin/plain_lambda.rs`), a plain
//! `lambda_runtime` function doing the same work. Both binaries are copied
//! and stripped first (`strip`), as a deployment would be.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The event: 10 records, record 3 failing when `failing` (no amount: a
/// permanent failure in `orders`), else all succeeding.
pub(crate) fn event(failing: bool) -> String {
    let records: Vec<Value> = (0..10u64)
        .map(|i| {
            let amount = if failing && i == 3 { 0 } else { 1999 };
            json!({
                "messageId": format!("0f0b6b6e-3d2c-4c1e-9d6b-{i:012}"),
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
                "body": format!(r#"{{"order_id": {i}, "customer": "c-7", "amount_cents": {amount}}}"#),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1700000000000",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1700000000001"
                },
                "messageAttributes": {},
                "md5OfBody": "00000000000000000000000000000000",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:orders",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records }).to_string()
}

/// What the fake Runtime API saw.
pub(crate) enum Seen {
    Next(Duration),
    Posted(Duration, String),
}

/// Serves one connection of the function's runtime client: the first
/// `limit` `/invocation/next` requests get the event (request ids `req-1`,
/// `req-2`, …), later ones hang (the function waits for its next event);
/// posts are acknowledged and reported.
pub(crate) async fn conn(
    sock: tokio::net::TcpStream,
    t0: Instant,
    (served, limit): (Arc<AtomicUsize>, usize),
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
    failing: bool,
) {
    let ev = event(failing);
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let request = line.trim().to_owned();
        let mut len = 0usize;
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        let _ = r.read_exact(&mut body).await;
        let reply = if request.contains("/invocation/next") {
            let _ = tx.send(Seen::Next(t0.elapsed()));
            let n = served.fetch_add(1, SeqCst) + 1;
            if n > limit {
                std::future::pending::<()>().await;
            }
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() + 60_000)
                .unwrap_or(0);
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                 lambda-runtime-aws-request-id: req-{n}\r\n\
                 lambda-runtime-deadline-ms: {deadline}\r\n\
                 lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:orders\r\n\
                 lambda-runtime-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793\r\n\
                 content-length: {}\r\n\r\n{ev}",
                ev.len()
            )
        } else {
            let text = format!("{request} {}", String::from_utf8_lossy(&body));
            let _ = tx.send(Seen::Posted(t0.elapsed(), text));
            "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                .to_owned()
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One cold start.
struct Start {
    /// Spawn → first `/next`.
    next: Duration,
    /// Spawn → the response posted.
    posted: Duration,
    /// What was posted.
    body: String,
    /// `VmHWM` once the response was posted, in KiB.
    peak_kib: u64,
}

/// The `VmHWM` of process `pid`, in KiB (0 if unreadable).
fn peak_kib(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// With `LAMBDA_BENCH_SMAPS_DIR` set, a copy of the process's
/// `/proc/PID/smaps` at the response (the last round's of each binary), to see
/// which mappings its resident memory is in.
fn keep_smaps(exe: &str, pid: Option<u32>) {
    let (Some(dir), Some(pid)) = (std::env::var_os("LAMBDA_BENCH_SMAPS_DIR"), pid) else {
        return;
    };
    // The stripped copies are `DIR/INDEX/NAME`: both parts, since two
    // binaries may share a name.
    let path = std::path::Path::new(exe);
    let part = |p: Option<&std::ffi::OsStr>| {
        p.map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    let name = format!(
        "{}-{}",
        part(path.parent().and_then(std::path::Path::file_name)),
        part(path.file_name())
    );
    let to = std::path::Path::new(&dir).join(format!("{name}.smaps"));
    if let Err(e) = std::fs::copy(format!("/proc/{pid}/smaps"), &to) {
        eprintln!("lambda cold start: could not keep {}: {e}", to.display());
    }
    if let Err(e) = resident_pages(pid, &to.with_extension("pages")) {
        eprintln!("lambda cold start: could not list resident pages: {e}");
    }
}

/// The resident pages of each file-backed mapping of process `pid`, one
/// line each: `ADDRESS_HEX START_HEX FILE_OFFSET_HEX PATH` (for mapping them
/// to symbols), from `/proc/PID/maps` and the present bit of `/proc/PID/pagemap`.
fn resident_pages(pid: u32, to: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(to)?);
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(range), Some(offset), Some(path)) = (f.first(), f.get(2), f.get(5)) else {
            continue;
        };
        if !path.starts_with('/') {
            // `[heap]`, `[stack]`, `[vsyscall]`, …: not a file.
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let mut entries = vec![0u8; ((b - a) / 4096 * 8) as usize];
        pagemap.seek(SeekFrom::Start(a / 4096 * 8))?;
        pagemap.read_exact(&mut entries)?;
        for (i, e) in entries.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(e.try_into().unwrap_or_default());
            if e >> 63 == 1 {
                writeln!(out, "{:x} {a:x} {offset} {path}", a + i as u64 * 4096)?;
            }
        }
    }
    out.flush()
}

/// Starts `exe` as a Lambda function whose Runtime API is at `addr`, with
/// the variables Lambda sets and `extra`; its output discarded.
pub(crate) fn spawn_function(
    exe: &str,
    addr: std::net::SocketAddr,
    extra: &[(&str, &str)],
) -> tokio::process::Child {
    tokio::process::Command::new(exe)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "orders")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "us-east-1")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the Lambda function")
}

/// One cold start of `exe`.
async fn once(exe: &str, failing: bool) -> Start {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t0 = Instant::now();
    let mut child = spawn_function(exe, addr, &[("RUST_LOG", "off")]);
    let served = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(conn(sock, t0, (served.clone(), 1), tx.clone(), failing));
        }
    });
    let mut first_next = None;
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(seen) = rx.recv().await {
            match seen {
                Seen::Next(t) => {
                    first_next.get_or_insert(t);
                }
                Seen::Posted(t, body) => return Some((t, body)),
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let peak_kib = peak_kib(child.id());
    keep_smaps(exe, child.id());
    let _ = child.kill().await;
    server.abort();
    let (posted, body) = got.expect("the function posted no response within 30 s");
    Start {
        next: first_next.unwrap_or_default(),
        posted,
        body,
        peak_kib,
    }
}

/// A stripped copy of `exe` in `dir` (the original if `strip` fails).
pub(crate) fn stripped(exe: &str, dir: &std::path::Path) -> String {
    let name = std::path::Path::new(exe)
        .file_name()
        .map_or_else(|| "function".into(), |n| n.to_string_lossy().into_owned());
    let _ = std::fs::create_dir_all(dir);
    let copy = dir.join(name);
    let ok = std::fs::copy(exe, &copy).is_ok()
        && std::process::Command::new("strip")
            .arg(&copy)
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        copy.to_string_lossy().into_owned()
    } else {
        eprintln!("lambda cold start: could not strip a copy of {exe}; running it as built");
        exe.to_owned()
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `runs` cold starts of each of `exes` (stripped copies), alternating
/// round by round, with one failing record or none; prints each, returns
/// per binary the medians as JSON.
pub(crate) async fn run(exes: &[&str], runs: usize, failing: bool) -> Vec<Value> {
    let dir = std::env::temp_dir().join(format!("sqs-worker-lambda-start-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let copies: Vec<String> = exes
        .iter()
        .enumerate()
        .map(|(i, e)| stripped(e, &dir.join(i.to_string())))
        .collect();
    let mut starts: Vec<Vec<Start>> = exes.iter().map(|_| Vec::new()).collect();
    for round in 0..runs {
        // Alternate which goes first, too.
        for k in 0..copies.len() {
            let i = (k + round) % copies.len();
            let s = once(&copies[i], failing).await;
            println!(
                "lambda cold start, {}: first /next after {:.1} ms, first response after {:.1} ms, \
                 peak RSS {:.1} MiB",
                exes[i],
                s.next.as_secs_f64() * 1e3,
                s.posted.as_secs_f64() * 1e3,
                s.peak_kib as f64 / 1024.0
            );
            starts[i].push(s);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    exes.iter()
        .zip(starts)
        .map(|(exe, s)| {
            json!({
                "workload": "lambda-start",
                "exe": exe,
                "runs": runs,
                "first_next_ms_median": median(s.iter().map(|s| s.next.as_secs_f64() * 1e3).collect()),
                "first_response_ms_median": median(s.iter().map(|s| s.posted.as_secs_f64() * 1e3).collect()),
                "peak_rss_mib_median": median(s.iter().map(|s| s.peak_kib as f64 / 1024.0).collect()),
                "response": s.last().map(|s| s.body.clone()),
            })
        })
        .collect()
}
