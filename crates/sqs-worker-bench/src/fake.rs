//! A minimal in-memory SQS (AWS JSON 1.0 protocol over HTTP/1.1 keep-alive)
//! serving one queue of `n` generated messages `{"i":N}`: a local server
//! fast enough that the consumer, not the server, bounds throughput (moto's
//! server answers ~10–100 calls per second here). It implements what the
//! consumers call: ReceiveMessage (long poll), DeleteMessage(Batch),
//! ChangeMessageVisibility(Batch) (accepted; visibility never lapses),
//! GetQueueAttributes, and SendMessageBatch (accepted and dropped: for the
//! producer benchmark). Not SQS: no visibility expiry, no redelivery.
//! A per-call latency imitates the network and SQS's own time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

struct Queue {
    visible: Mutex<VecDeque<u64>>,
    arrived: Notify,
}

/// Starts the server on a free loopback port with messages `0..n`; returns
/// its endpoint URL. It serves until the process exits. Each call is
/// answered `latency` after its request arrived (in-region SQS answers in
/// about 10–20 ms; 0 for the consumer's own cost alone).
pub(crate) async fn start(n: u64, latency: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let q = Arc::new(Queue {
        visible: Mutex::new((0..n).collect()),
        arrived: Notify::new(),
    });
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let _ = sock.set_nodelay(true);
            tokio::spawn(serve(sock, q.clone(), latency));
        }
    });
    format!("http://{addr}")
}

async fn serve(sock: TcpStream, q: Arc<Queue>, latency: Duration) {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        let (mut len, mut target) = (0usize, String::new());
        loop {
            line.clear();
            match r.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("x-amz-target") {
                    target = v.trim().trim_start_matches("AmazonSQS.").to_owned();
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).await.is_err() {
            return;
        }
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let resp = handle(&q, &target, &req).await.to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n",
            resp.len()
        );
        if w.write_all(head.as_bytes()).await.is_err()
            || w.write_all(resp.as_bytes()).await.is_err()
        {
            return;
        }
    }
}

fn ok_entries(req: &Value) -> Value {
    let ids: Vec<Value> = req["Entries"]
        .as_array()
        .map(|es| es.iter().map(|e| json!({ "Id": e["Id"] })).collect())
        .unwrap_or_default();
    json!({ "Successful": ids, "Failed": [] })
}

/// Every entry accepted, with a made-up message id (bodies are dropped).
fn sent_entries(req: &Value) -> Value {
    let ids: Vec<Value> = req["Entries"]
        .as_array()
        .map(|es| {
            es.iter()
                .enumerate()
                .map(|(i, e)| {
                    json!({
                        "Id": e["Id"],
                        "MessageId": format!("00000000-0000-4000-8000-{i:012}"),
                        "MD5OfMessageBody": "00000000000000000000000000000000",
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({ "Successful": ids, "Failed": [] })
}

async fn handle(q: &Queue, action: &str, req: &Value) -> Value {
    match action {
        "ReceiveMessage" => {
            let max = req["MaxNumberOfMessages"]
                .as_u64()
                .unwrap_or(1)
                .clamp(1, 10) as usize;
            let wait = Duration::from_secs(req["WaitTimeSeconds"].as_u64().unwrap_or(0));
            let deadline = Instant::now() + wait;
            loop {
                let got: Vec<u64> = {
                    let mut v = q.visible.lock().expect("lock");
                    let k = max.min(v.len());
                    v.drain(..k).collect()
                };
                if !got.is_empty() || Instant::now() >= deadline {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or(0)
                        .to_string();
                    let msgs: Vec<Value> = got
                        .iter()
                        .map(|i| {
                            json!({
                                "MessageId": format!("00000000-0000-4000-8000-{i:012}"),
                                "ReceiptHandle": format!("rh-{i}-AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a"),
                                "Body": format!("{{\"i\":{i}}}"),
                                "Attributes": {
                                    "ApproximateReceiveCount": "1",
                                    "SentTimestamp": now,
                                    "ApproximateFirstReceiveTimestamp": now,
                                },
                            })
                        })
                        .collect();
                    return if msgs.is_empty() {
                        json!({})
                    } else {
                        json!({ "Messages": msgs })
                    };
                }
                let _ = tokio::time::timeout(
                    deadline.saturating_duration_since(Instant::now()),
                    q.arrived.notified(),
                )
                .await;
            }
        }
        "DeleteMessageBatch" | "ChangeMessageVisibilityBatch" => ok_entries(req),
        "SendMessageBatch" => sent_entries(req),
        "GetQueueAttributes" => json!({ "Attributes": {
            "VisibilityTimeout": "30",
            "QueueArn": "arn:aws:sqs:us-east-1:123456789012:fake",
            "ApproximateNumberOfMessages": "0",
            "ApproximateNumberOfMessagesNotVisible": "0",
        }}),
        _ => json!({}),
    }
}
