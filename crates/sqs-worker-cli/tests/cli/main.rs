//! The `sqs-worker` command against moto's server: every command, golden
//! tables (volatile parts normalised), JSON parsed, exit codes, and a redrive
//! of 1,000 mixed dead letters interrupted by a kill.

mod movetask;
mod redrive;
mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn stats_shows_depth_in_flight_delayed_and_the_dlq() {
    let c = client().await;
    let dlq_name = unique("stats-dlq");
    let dlq = create(&c, &dlq_name, &[]).await;
    let policy = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"5"}}"#,
        arn(&c, &dlq).await
    );
    let name = unique("stats");
    let url = create(&c, &name, &[("RedrivePolicy", &policy)]).await;
    for i in 0..3 {
        c.send_message()
            .queue_url(&url)
            .message_body(format!("m{i}"))
            .send()
            .await
            .expect("send");
    }
    c.send_message()
        .queue_url(&url)
        .message_body("later")
        .delay_seconds(600)
        .send()
        .await
        .expect("send");
    c.receive_message()
        .queue_url(&url)
        .visibility_timeout(600)
        .send()
        .await
        .expect("receive");
    c.send_message()
        .queue_url(&dlq)
        .message_body("dead")
        .send()
        .await
        .expect("send");

    let out = run(&["stats", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = normalise(&stdout(&out), &[(&dlq_name, "<dlq>"), (&name, "<queue>")]);
    assert_eq!(
        text,
        "queue | <queue>\n\
         visible | 2\n\
         in flight | 1\n\
         delayed | 1\n\
         dead letters (after 5 receives) | 1 in <dlq>\n\
         Age of the oldest message: not available (this build has no CloudWatch client; \
         see ApproximateAgeOfOldestMessage in the template's dashboard)."
    );

    let out = run(&["stats", &url, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["queue"], name.as_str());
    assert_eq!(
        (
            v["visible"].as_u64(),
            v["in_flight"].as_u64(),
            v["delayed"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(v["dead_letter_queue"]["queue"], dlq_name.as_str());
    assert_eq!(v["dead_letter_queue"]["visible"], 1);
    assert_eq!(v["dead_letter_queue"]["max_receive_count"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_watch_refreshes_in_place() {
    let c = client().await;
    let name = unique("watch");
    let url = create(&c, &name, &[]).await;
    let mut child = cli_at(
        &server().endpoint,
        &["stats", &name, "--watch", "--interval", "1"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn");
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send_message()
        .queue_url(&url)
        .message_body("x")
        .send()
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    child.kill().expect("kill");
    let out = child.wait_with_output().expect("output");
    let text = stdout(&out);
    assert!(
        text.matches("│ visible").count() >= 2,
        "at least two frames: {text}"
    );
    assert!(
        text.contains("\x1b[J"),
        "later frames redraw in place: {text:?}"
    );
    let last = text.rsplit("\x1b[J").next().unwrap_or_default();
    assert!(
        normalise(last, &[]).contains("visible | 1"),
        "the refresh shows the new message: {last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn send_lines_a_json_array_and_many_in_batches() {
    let c = client().await;
    let name = unique("send");
    let url = create(&c, &name, &[]).await;
    let mut child = cli_at(
        &server().endpoint,
        &[
            "send",
            &name,
            "--attr",
            "source=backfill",
            "--attr",
            "tenant=acme",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"{\"id\":1}\n\n{\"id\":2}\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).replace(&name, "<queue>"),
        "Sent 2 of 2 messages to <queue>.\n"
    );
    let mut got = drain(&c, &url).await;
    got.sort_by(|a, b| a.body.cmp(&b.body));
    assert_eq!(
        got.iter().map(|g| g.body.as_str()).collect::<Vec<_>>(),
        [r#"{"id":1}"#, r#"{"id":2}"#]
    );
    assert!(got.iter().all(
        |g| g.attributes.get("source").map(String::as_str) == Some("backfill")
            && g.attributes.get("tenant").map(String::as_str) == Some("acme")
    ));

    let dir = std::env::temp_dir().join(unique("send-file"));
    std::fs::create_dir_all(&dir).expect("dir");
    let array = dir.join("array.json");
    std::fs::write(&array, r#"["plain text", {"id": 3}]"#).expect("write");
    let out = run(&["send", &url, "--file", array.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut bodies: Vec<String> = drain(&c, &url).await.into_iter().map(|g| g.body).collect();
    bodies.sort();
    assert_eq!(bodies, ["plain text", r#"{"id":3}"#]);

    let many = dir.join("many.jsonl");
    let lines: String = (0..1000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(&many, lines).expect("write");
    let out = run(&["send", &name, "-f", many.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Sent 1000 of 1000 messages"));
    let got = drain(&c, &url).await;
    let mut ns: Vec<u64> = got
        .iter()
        .filter_map(|g| serde_json::from_str::<serde_json::Value>(&g.body).ok()?["n"].as_u64())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..1000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn send_to_a_fifo_queue_needs_a_group_and_keeps_order() {
    let c = client().await;
    let name = format!("{}.fifo", unique("send"));
    let url = create(&c, &name, &[("FifoQueue", "true")]).await;
    let dir = std::env::temp_dir().join(unique("fifo-file"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("in.txt");
    std::fs::write(&file, "first\nsecond\nthird\n").expect("write");
    let path = file.to_str().expect("path");

    let out = run(&["send", &name, "--file", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is a FIFO queue: give a message group with --group."));

    let out = run(&["send", &name, "--file", path, "--group", "customer-7"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = drain(&c, &url).await;
    assert_eq!(
        got.iter().map(|g| g.body.as_str()).collect::<Vec<_>>(),
        ["first", "second", "third"]
    );
    assert!(got.iter().all(|g| g.group.as_deref() == Some("customer-7")));
}

#[tokio::test(flavor = "multi_thread")]
async fn peek_shows_and_releases() {
    let c = client().await;
    let name = unique("peek");
    let url = create(&c, &name, &[]).await;
    for i in 0..3 {
        c.send_message()
            .queue_url(&url)
            .message_body(format!("{{\"order\":{i}}}"))
            .message_attributes("tenant", string_attr("acme"))
            .send()
            .await
            .expect("send");
    }
    let out = run(&["peek", &name, "-n", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = normalise(&mask_ids(&stdout(&out)), &[]);
    // The age column is volatile: it must parse as an age, then is masked.
    let text: String = text
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(" | ").collect();
            if cells.len() == 5 && cells[0] == "<id>" {
                assert!(
                    cells[2].ends_with('s') && cells[2].len() <= 6,
                    "an age: {l}"
                );
                cells[2] = "<age>";
            }
            cells.join(" | ") + "\n"
        })
        .collect();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.remove(0),
        "message id | receives | age | attributes | body"
    );
    assert_eq!(
        lines.pop(),
        Some("2 message(s) shown and released; each receive count went up by one.")
    );
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "<id> | 1 | <age> | tenant=acme | {\"order\":0}",
            "<id> | 1 | <age> | tenant=acme | {\"order\":1}",
        ]
    );
    assert_eq!(
        depth(&c, &url).await,
        (3, 0),
        "peek released what it received"
    );

    let out = run(&["peek", &url, "--no-body", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let list = v.as_array().expect("array");
    assert_eq!(list.len(), 3);
    assert!(
        list.iter()
            .all(|m| m.get("body").is_none() && m["attributes"]["tenant"] == "acme")
    );
    let counts: u64 = list
        .iter()
        .filter_map(|m| m["receive_count"].as_u64())
        .sum();
    assert_eq!(
        counts,
        2 + 2 + 1,
        "the two peeked before were received twice"
    );

    let out = run(&["peek", &name, "--no-body"]);
    assert!(!stdout(&out).contains("order"), "--no-body prints no body");
}

#[tokio::test(flavor = "multi_thread")]
async fn inspect_groups_dead_letters_by_kind_and_error() {
    let c = client().await;
    let src_name = unique("inspect-src");
    let dlq_name = unique("inspect-dlq");
    let dlq = create(&c, &dlq_name, &[]).await;
    // A source queue SQS dead-letters from itself after one receive.
    let policy = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"1"}}"#,
        arn(&c, &dlq).await
    );
    let src = create(&c, &src_name, &[("RedrivePolicy", &policy)]).await;
    let t0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    for (i, (kind, error)) in [
        ("permanent", "invalid order 1: missing customer"),
        ("permanent", "invalid order 2: missing customer"),
        ("permanent", "invalid order 3: missing customer"),
        ("panicked", "handler panicked: index out of bounds"),
    ]
    .into_iter()
    .enumerate()
    {
        let d = Dead {
            body: format!("b{i}"),
            kind,
            error,
            source_url: &src,
            failed_at_ms: t0 + i as u64 * 60_000,
            group: None,
        };
        put_dead(&c, &dlq, &d).await;
    }
    // moto moves it without the DeadLetterQueueSourceArn system attribute
    // that SQS adds, so its error column shows "-" here.
    c.send_message()
        .queue_url(&src)
        .message_body("poison")
        .send()
        .await
        .expect("send");
    for _ in 0..2 {
        c.receive_message()
            .queue_url(&src)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive");
    }

    let out = run(&["dlq", "inspect", &dlq_name, "--prefix", "13"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = normalise(
        &mask_ids(&stdout(&out)),
        &[(&dlq_name, "<dlq>"), (&src_name, "<src>")],
    );
    assert_eq!(
        text,
        "kind | error | count | first failed | last failed | example id\n\
         permanent | invalid orde… | 3 | 2026-01-01T00:00:00Z | 2026-01-01T00:02:00Z | <id>\n\
         (moved by SQS) | - | 1 | - | - | <id>\n\
         panicked | handler pani… | 1 | 2026-01-01T00:03:00Z | 2026-01-01T00:03:00Z | <id>\n\
         5 dead letter(s) in 3 group(s) in <dlq>; each was received once to read it."
    );
    assert_eq!(
        depth(&c, &dlq).await,
        (5, 0),
        "inspect released every message"
    );

    let out = run(&["dlq", "inspect", &dlq, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["total"], 5);
    let groups = v["groups"].as_array().expect("groups");
    // The default 40-character prefix tells the three order errors apart.
    assert_eq!(groups.len(), 5, "{v}");
    let panicked = groups
        .iter()
        .find(|g| g["kind"] == "panicked")
        .expect("panicked group");
    assert_eq!(panicked["count"], 1);
    assert_eq!(panicked["error"], "handler panicked: index out of bounds");
    assert_eq!(panicked["first_failed_at_ms"], t0 + 180_000);
    let by_sqs = groups
        .iter()
        .find(|g| g["kind"].is_null())
        .expect("SQS group");
    assert_eq!(by_sqs["count"], 1);
    assert!(
        by_sqs["example_message_id"]
            .as_str()
            .is_some_and(|s| s.len() == 36)
    );
}
