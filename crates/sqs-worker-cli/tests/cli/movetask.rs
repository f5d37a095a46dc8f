//! `StartMessageMoveTask` for messages SQS dead-lettered itself. moto 5.2
//! does not implement the action, so these tests put a loopback proxy in
//! front of moto that answers it (and records the request) and forwards every
//! other request.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::support::*;

/// The bodies of the `StartMessageMoveTask` requests the proxy answered.
type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

/// Starts the proxy; returns its endpoint and what it saw.
fn proxy(upstream: &str) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (upstream, seen) = (upstream.clone(), seen2.clone());
            std::thread::spawn(move || serve(conn, &upstream, &seen));
        }
    });
    (endpoint, seen)
}

fn serve(mut conn: TcpStream, upstream: &str, seen: &Seen) {
    let Some((head, body)) = read_request(&mut conn) else {
        return;
    };
    let target = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-amz-target:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    if target == "amazonsqs.startmessagemovetask" {
        seen.lock()
            .expect("lock")
            .push(serde_json::from_slice(&body).unwrap_or_default());
        let reply = r#"{"TaskHandle":"proxy-task-1"}"#;
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        );
        return;
    }
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = up.write_all(head.as_bytes());
    let _ = up.write_all(&body);
    let mut response = Vec::new();
    let _ = up.read_to_end(&mut response); // moto closes after one response
    // Tell the client not to reuse this connection.
    if let Some(eol) = response.windows(2).position(|w| w == b"\r\n") {
        response.splice(eol + 2..eol + 2, b"Connection: close\r\n".iter().copied());
    }
    let _ = conn.write_all(&response);
}

/// The request head (with its blank line) and body (by Content-Length).
fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

/// A DLQ holding two messages SQS dead-lettered (moto's redrive after one
/// receive) and one a runner dead-lettered; returns (dlq, source).
async fn mixed_dlq(c: &aws_sdk_sqs::Client) -> (String, String) {
    let dlq = create(c, &unique("move-dlq"), &[]).await;
    let policy = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"1"}}"#,
        arn(c, &dlq).await
    );
    let src = create(c, &unique("move-src"), &[("RedrivePolicy", &policy)]).await;
    for body in ["poison-1", "poison-2"] {
        c.send_message()
            .queue_url(&src)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }
    for _ in 0..4 {
        c.receive_message()
            .queue_url(&src)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive");
    }
    let d = Dead {
        body: "ours".into(),
        kind: "permanent",
        error: "bad",
        source_url: &src,
        failed_at_ms: 1,
        group: None,
    };
    put_dead(c, &dlq, &d).await;
    assert_eq!(
        depth(c, &dlq).await,
        (3, 0),
        "moto dead-lettered the two poison messages"
    );
    (dlq, src)
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_dead_letters_go_to_start_message_move_task_without_a_filter() {
    let c = client().await;
    let (dlq, src) = mixed_dlq(&c).await;
    let (endpoint, seen) = proxy(&server().endpoint);

    let out = cli_at(
        &endpoint,
        &["dlq", "redrive", &dlq, "--yes", "--rate", "20"],
    )
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = normalise(&stdout(&out), &[]);
    assert!(
        text.contains("dead-lettered by SQS: handed to StartMessageMoveTask | 2"),
        "{text}"
    );
    assert!(text.contains("(task proxy-task-1)"), "{text}");

    let calls = seen.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1, "one move task: {calls:?}");
    assert_eq!(calls[0]["SourceArn"], arn(&c, &dlq).await.as_str());
    assert_eq!(calls[0]["MaxNumberOfMessagesPerSecond"], 20);
    assert!(
        calls[0].get("DestinationArn").is_none(),
        "to their original sources"
    );

    let moved = drain(&c, &src).await;
    assert_eq!(
        moved.iter().map(|g| g.body.as_str()).collect::<Vec<_>>(),
        ["ours"],
        "ours re-sent by the CLI"
    );
    assert_eq!(
        depth(&c, &dlq).await,
        (2, 0),
        "SQS's own are released for the move task"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_filter_no_move_task_is_started() {
    let c = client().await;
    let (dlq, src) = mixed_dlq(&c).await;
    let (endpoint, seen) = proxy(&server().endpoint);

    let out = cli_at(
        &endpoint,
        &[
            "dlq",
            "redrive",
            &dlq,
            "--yes",
            "--filter",
            "kind=permanent",
        ],
    )
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        seen.lock().expect("lock").is_empty(),
        "no StartMessageMoveTask with a filter"
    );
    let text = normalise(&stdout(&out), &[]);
    assert!(text.contains("left: not matching the filter | 2"), "{text}");
    assert_eq!(drain(&c, &src).await.len(), 1);
    assert_eq!(depth(&c, &dlq).await, (2, 0));
}
