//! An SQS-aware HTTP proxy on loopback, for fault tests that need what the
//! local server does not model. Each request (one per connection: moto
//! closes the connection after its response) goes to a rule that decides
//! what happens to it: forwarded, answered with an SQS error, held and then
//! forwarded whether or not the client is still there, forwarded with its
//! response dropped, answered with a response the test stored, or answered
//! by the test's own code (which may call the server itself, [`call`]).
//! Every forwarded response is shown to an observer (counting, remembering).
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the rule sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The SQS action (`ReceiveMessage`, `DeleteMessageBatch`, …), from `x-amz-target`.
    pub action: String,
    /// The JSON body.
    pub body: serde_json::Value,
    /// The request's head (request line and headers), for [`call`]s made
    /// on its behalf.
    pub head: String,
}

/// What the proxy does with a request.
pub enum Verdict {
    /// Forward it and return the response.
    Forward,
    /// Answer with an SQS error in the JSON protocol (`__type`) and the
    /// query-compatible header (`x-amzn-query-error: CODE;Sender`), as SQS does.
    Error {
        status: &'static str,
        code: &'static str,
    },
    /// Hold the request, then forward it whatever the client did meanwhile:
    /// SQS does not cancel a long poll when the client goes away.
    HoldThenForward(Duration),
    /// Forward it, then close the client's connection without an answer (a
    /// response lost on the way back).
    DropResponse,
    /// Forward it at once, and hold its response this long (a slow answer:
    /// SQS has applied the call, the client does not know yet).
    DelayResponse(Duration),
    /// Answer with these bytes (a whole HTTP response) without forwarding.
    Raw(Vec<u8>),
    /// Answer with what this future makes (a whole HTTP response; `None`
    /// closes the connection unanswered), without forwarding: the test's own
    /// imitation of an action, which may [`call`] the server.
    Answer(Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>),
}

type Rule = dyn Fn(&Request) -> Verdict + Send + Sync;
type Observer = dyn Fn(&Request, &serde_json::Value, &[u8]) + Send + Sync;

pub struct SqsProxy {
    /// `http://127.0.0.1:PORT`: give this to the client.
    pub endpoint: String,
}

impl SqsProxy {
    /// Starts a proxy to `upstream`; `observe` sees each forwarded request
    /// with the response's JSON body and its raw bytes.
    pub async fn start(
        upstream: &str,
        rule: impl Fn(&Request) -> Verdict + Send + Sync + 'static,
        observe: impl Fn(&Request, &serde_json::Value, &[u8]) + Send + Sync + 'static,
    ) -> SqsProxy {
        let target = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let rule: Arc<Rule> = Arc::new(rule);
        let observe: Arc<Observer> = Arc::new(observe);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (rule, observe, target) = (rule.clone(), observe.clone(), target.clone());
                tokio::spawn(serve(client, target, rule, observe));
            }
        });
        SqsProxy { endpoint }
    }
}

async fn serve(mut client: TcpStream, target: String, rule: Arc<Rule>, observe: Arc<Observer>) {
    let Some((raw, request)) = read_request(&mut client).await else {
        return;
    };
    let forward = |raw: Vec<u8>| async move {
        let mut server = TcpStream::connect(&target).await.ok()?;
        server.write_all(&raw).await.ok()?;
        let mut response = Vec::new();
        server.read_to_end(&mut response).await.ok()?;
        Some(response)
    };
    let response = match rule(&request) {
        Verdict::Forward => forward(raw).await,
        Verdict::HoldThenForward(d) => {
            tokio::time::sleep(d).await;
            forward(raw).await
        }
        Verdict::DropResponse => {
            if let Some(response) = forward(raw).await {
                observe(&request, &json_body(&response), &response);
            }
            return; // the client's connection closes unanswered
        }
        Verdict::DelayResponse(d) => {
            let response = forward(raw).await;
            tokio::time::sleep(d).await;
            response
        }
        Verdict::Error { status, code } => Some(error_response(status, code)),
        Verdict::Raw(bytes) => Some(bytes),
        Verdict::Answer(answer) => answer.await,
    };
    let Some(response) = response else { return };
    observe(&request, &json_body(&response), &response);
    let _ = client.write_all(&response).await;
    let _ = client.shutdown().await;
}

/// An SQS error answer in the JSON protocol.
pub fn error_response(status: &str, code: &str) -> Vec<u8> {
    let body = format!(r#"{{"__type":"com.amazonaws.sqs#{code}","message":"{code} (injected)"}}"#);
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\n\
         x-amzn-query-error: {code};Sender\r\n\
         x-amzn-requestid: 00000000-0000-0000-0000-000000000000\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An SQS success answer in the JSON protocol, with this body.
pub fn ok_response(body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
         x-amzn-requestid: 00000000-0000-0000-0000-000000000000\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Calls `action` on the server at `upstream` (`http://HOST:PORT`) with
/// `body`, reusing the head of the client's request `like` (its signature
/// no longer matches; the local server does not check signatures). Returns
/// the answer's JSON body, `None` if the call failed on the wire or SQS
/// answered with an error (`__type`).
pub async fn call(
    upstream: &str,
    like: &Request,
    action: &str,
    body: &serde_json::Value,
) -> Option<serde_json::Value> {
    let body = body.to_string();
    let mut raw = String::new();
    for line in like.head.split("\r\n").filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("x-amz-target") || name.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        raw.push_str(line);
        raw.push_str("\r\n");
    }
    raw.push_str(&format!(
        "x-amz-target: AmazonSQS.{action}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ));
    let mut server = TcpStream::connect(upstream.trim_start_matches("http://"))
        .await
        .ok()?;
    server.write_all(raw.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await.ok()?;
    let json = json_body(&response);
    json.get("__type").is_none().then_some(json)
}

/// One request: headers, then Content-Length bytes of body.
async fn read_request(client: &mut TcpStream) -> Option<(Vec<u8>, Request)> {
    let mut req = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        let n = client.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        req.extend_from_slice(&buf[..n]);
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let len: usize = header("content-length:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while req.len() < head_end + len {
        let n = client.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        req.extend_from_slice(&buf[..n]);
    }
    // The header is lower-cased above; take the action's spelling from the raw bytes.
    let raw_head = String::from_utf8_lossy(&req[..head_end]).into_owned();
    let action = raw_head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("x-amz-target")
                .then(|| v.trim().trim_start_matches("AmazonSQS.").to_owned())
        })
        .unwrap_or_default();
    let body = serde_json::from_slice(&req[head_end..]).unwrap_or(serde_json::Value::Null);
    Some((
        req,
        Request {
            action,
            body,
            head: raw_head,
        },
    ))
}

/// The JSON body of a whole HTTP response (`Null` if there is none).
pub fn json_body(response: &[u8]) -> serde_json::Value {
    let Some(i) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return serde_json::Value::Null;
    };
    serde_json::from_slice(&response[i + 4..]).unwrap_or(serde_json::Value::Null)
}

/// Messages in a `ReceiveMessage` response body.
pub fn received(body: &serde_json::Value) -> usize {
    body.get("Messages")
        .and_then(|m| m.as_array())
        .map_or(0, |m| m.len())
}

/// Successful entries in a batch response body.
pub fn successful(body: &serde_json::Value) -> usize {
    body.get("Successful")
        .and_then(|m| m.as_array())
        .map_or(0, |m| m.len())
}
