//! `dlq redrive` and the command line's contract: exit codes, sentences, help.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

/// A DLQ with two standard sources and one FIFO source.
struct Setup {
    dlq_name: String,
    dlq: String,
    a: String,
    b: String,
}

async fn setup(c: &aws_sdk_sqs::Client, tag: &str) -> Setup {
    let dlq_name = unique(&format!("{tag}-dlq"));
    Setup {
        dlq: create(c, &dlq_name, &[]).await,
        dlq_name,
        a: create(c, &unique(&format!("{tag}-a")), &[]).await,
        b: create(c, &unique(&format!("{tag}-b")), &[]).await,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_moves_matching_dead_letters_home_without_the_schema() {
    let c = client().await;
    let s = setup(&c, "home").await;
    let fifo_dlq = create(
        &c,
        &format!("{}.fifo", unique("home-dlq")),
        &[("FifoQueue", "true")],
    )
    .await;
    let fifo_src = create(
        &c,
        &format!("{}.fifo", unique("home-src")),
        &[("FifoQueue", "true")],
    )
    .await;
    for (i, (kind, src)) in [("permanent", &s.a), ("permanent", &s.b), ("panicked", &s.a)]
        .into_iter()
        .enumerate()
    {
        let d = Dead {
            body: format!("m{i}"),
            kind,
            error: "boom",
            source_url: src,
            failed_at_ms: 1,
            group: None,
        };
        put_dead(&c, &s.dlq, &d).await;
    }
    for i in 0..2 {
        let d = Dead {
            body: format!("f{i}"),
            kind: "permanent",
            error: "boom",
            source_url: &fifo_src,
            failed_at_ms: 1,
            group: Some("customer-9"),
        };
        put_dead(&c, &fifo_dlq, &d).await;
    }

    let out = run(&[
        "dlq",
        "redrive",
        &s.dlq_name,
        "--filter",
        "kind=permanent",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a_name = s.a.rsplit('/').next().unwrap_or_default();
    let b_name = s.b.rsplit('/').next().unwrap_or_default();
    let text = normalise(
        &stdout(&out),
        &[(a_name, "<a>"), (b_name, "<b>"), (&s.dlq_name, "<dlq>")],
    );
    assert_eq!(
        text,
        "Redrive of <dlq>\n\
         outcome | messages\n\
         moved to <a> | 1\n\
         moved to <b> | 1\n\
         moved (total) | 2\n\
         left: not matching the filter | 1\n\
         left: dead-lettered by SQS | 0\n\
         sent but not deleted (now in both queues) | 0"
    );
    for (url, body) in [(&s.a, "m0"), (&s.b, "m1")] {
        let got = drain(&c, url).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, body);
        assert_eq!(got[0].receive_count, 1, "a fresh message in the source");
        let keys: Vec<&String> = got[0].attributes.keys().collect();
        assert_eq!(
            keys,
            ["tenant"],
            "SqsWorker.* stripped, the user's attribute kept"
        );
    }
    let left = drain(&c, &s.dlq).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].body, "m2");

    let out = run(&["dlq", "redrive", &fifo_dlq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = drain(&c, &fifo_src).await;
    assert_eq!(
        got.iter().map(|g| g.body.as_str()).collect::<Vec<_>>(),
        ["f0", "f1"],
        "FIFO order kept"
    );
    assert!(got.iter().all(|g| g.group.as_deref() == Some("customer-9")));
    assert_eq!(depth(&c, &fifo_dlq).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_dry_run_and_unconfirmed_change_nothing() {
    let c = client().await;
    let s = setup(&c, "dry").await;
    for i in 0..4 {
        let kind = if i < 3 { "permanent" } else { "timed_out" };
        let d = Dead {
            body: format!("m{i}"),
            kind,
            error: "db timeout",
            source_url: &s.a,
            failed_at_ms: 1,
            group: None,
        };
        put_dead(&c, &s.dlq, &d).await;
    }
    c.send_message()
        .queue_url(&s.dlq)
        .message_body("no schema")
        .send()
        .await
        .expect("send");

    let out = run(&["dlq", "redrive", &s.dlq, "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a_name = s.a.rsplit('/').next().unwrap_or_default();
    let text = normalise(&stdout(&out), &[(a_name, "<a>"), (&s.dlq_name, "<dlq>")]);
    assert_eq!(
        text,
        "Redrive of <dlq> (dry run: nothing was changed)\n\
         outcome | messages\n\
         would move to <a> | 4\n\
         would move (total) | 4\n\
         left: not matching the filter | 0\n\
         dead-lettered by SQS: would go to StartMessageMoveTask | 1\n\
         sent but not deleted (now in both queues) | 0"
    );
    assert_eq!(depth(&c, &s.dlq).await, (5, 0));
    assert_eq!(depth(&c, &s.a).await, (0, 0));

    let out = run(&["dlq", "redrive", &s.dlq, "--filter", "error~timeout"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("there is no terminal to confirm on: pass --yes"),
        "{}",
        stderr(&out)
    );
    assert_eq!(depth(&c, &s.dlq).await, (5, 0));
    assert_eq!(depth(&c, &s.a).await, (0, 0));
}

/// 1,000 dead letters: 600 `permanent` (300 from each of two sources), 300
/// `panicked`, 100 without the schema. The redrive of `kind=permanent` is
/// killed once 150 or more have moved, then run again: every permanent one
/// arrives at its own source at least once, none is left in the DLQ, the
/// others stay; duplicates (a batch sent but not yet deleted when killed) are
/// counted and bounded by one batch.
#[tokio::test(flavor = "multi_thread")]
async fn redrive_of_1000_mixed_dead_letters_survives_a_kill() {
    let c = client().await;
    let s = setup(&c, "crash").await;
    let items: Vec<(String, Option<Dead<'_>>)> = (0..1000)
        .map(|i| match i % 10 {
            0 => (format!("plain-{i}"), None),
            1..=3 => {
                let body = format!("panicked-{i}");
                let d = Dead {
                    body: body.clone(),
                    kind: "panicked",
                    error: "oops",
                    source_url: &s.a,
                    failed_at_ms: 1,
                    group: None,
                };
                (body, Some(d))
            }
            _ => {
                let (src, tag) = if i % 2 == 0 { (&s.a, "a") } else { (&s.b, "b") };
                let body = format!("permanent-{tag}-{i}");
                let d = Dead {
                    body: body.clone(),
                    kind: "permanent",
                    error: "bad input",
                    source_url: src,
                    failed_at_ms: 1,
                    group: None,
                };
                (body, Some(d))
            }
        })
        .collect();
    put_many(&c, &s.dlq, &items).await;
    assert_eq!(depth(&c, &s.dlq).await, (1000, 0));

    let args = [
        "dlq",
        "redrive",
        &s.dlq,
        "--filter",
        "kind=permanent",
        "--yes",
        "--rate",
        "150",
        "--visibility-timeout",
        "20",
    ];
    let mut child = cli_at(&server().endpoint, &args).spawn().expect("spawn");
    let mut moved = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while std::time::Instant::now() < deadline {
        moved = depth(&c, &s.a).await.0 + depth(&c, &s.b).await.0;
        if moved >= 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "the first run was killed, it did not finish (moved {moved})"
    );
    assert!(
        (150..600).contains(&moved),
        "killed half-way, not at the end: {moved}"
    );

    tokio::time::sleep(Duration::from_secs(21)).await; // the killed run's holds run out
    let out = cli_at(&server().endpoint, &args).output().expect("rerun");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );

    let mut seen: HashMap<String, u32> = HashMap::new();
    for (url, tag) in [(&s.a, "a"), (&s.b, "b")] {
        for g in drain(&c, url).await {
            assert!(
                g.body.starts_with(&format!("permanent-{tag}-")),
                "{} arrived at its own source",
                g.body
            );
            assert!(!g.attributes.keys().any(|k| k.starts_with("SqsWorker.")));
            *seen.entry(g.body).or_default() += 1;
        }
    }
    let expected = (0..1000).filter(|i| i % 10 >= 4).count();
    assert_eq!(
        seen.len(),
        expected,
        "every permanent dead letter arrived: nothing lost"
    );
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!("redrive with a kill: {expected} moved, {duplicates} duplicate(s)");
    assert!(
        duplicates <= 10,
        "at most the one batch in flight is duplicated: {duplicates}"
    );

    let left = drain(&c, &s.dlq).await;
    assert_eq!(left.len(), 400, "the panicked and schema-less ones stay");
    assert!(left.iter().all(|g| !g.body.starts_with("permanent")));
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_sentences_with_documented_exit_codes() {
    let out = run(&["stats", "no-such-queue-here"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr(&out),
        "sqs-worker: The queue no-such-queue-here does not exist (or not in this account and \
         region); check the name and AWS_REGION.\n"
    );
    let out = run(&[
        "peek",
        "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains(
        "is in region eu-west-1 but the configured region is us-east-1; set AWS_REGION=eu-west-1."
    ));
    let out = run(&["dlq", "redrive", "x", "--filter", "kind:permanent", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("use kind=KIND or error~TEXT"));
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage errors are 2 too");

    // Nothing listens on a port we just closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let out = cli_at(&format!("http://127.0.0.1:{port}"), &["stats", "orders"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("sqs-worker: Could not reach SQS for GetQueueUrl on orders"));
    let out = cli_at(&server().endpoint, &["stats", "orders"])
        .env_remove("AWS_REGION")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}

#[test]
fn every_command_has_help_with_an_example() {
    let top = run(&["--help"]);
    let text = stdout(&top);
    for code in 0..=6 {
        assert!(
            text.contains(&format!("\n  {code}  ")),
            "exit code {code} documented: {text}"
        );
    }
    for cmd in [
        &["stats"][..],
        &["send"],
        &["peek"],
        &["dlq", "inspect"],
        &["dlq", "redrive"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            stdout(&out).contains("Example"),
            "{cmd:?} --help has an example"
        );
    }
    let redrive = stdout(&run(&["dlq", "redrive", "--help"]));
    assert!(redrive.contains("never loses a message") && redrive.contains("delivered twice"));
    let inspect = stdout(&run(&["dlq", "inspect", "--help"]));
    assert!(inspect.contains("raises their receive counts"));
}
