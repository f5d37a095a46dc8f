//! Property tests (proptest, stable Rust):
//! - the engine's report: for random batches (random FIFO groups, failures,
//!   permanent failures, panics, slow handlers, concurrency, execution mode
//!   and deadlines) every input id appears exactly once in the report,
//!   succeeded or failed; a handler runs at most once per message; a FIFO
//!   group stops at its first failure;
//! - the Lambda event → message conversion: random records, serialized to
//!   the JSON Lambda sends and read back, arrive as messages with the same
//!   id, body, receipt handle, receive count, group, deduplication id and
//!   message attributes; every record is reported exactly once.
//!
//! `PROPTEST_CASES=1000 cargo test --all-features --test it proptests::` for a longer run.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use proptest::prelude::*;
use sqs_worker::{AttributeValue, EngineConfig, Error, Execution, Message, Visibility};
use sqs_worker_core::runner::{Engine, FailureKind, Processor};
use sqs_worker_lambda::testing::{event, failed_ids, record, run_event};
use sqs_worker_lambda::{SqsPayload, message_from_record};

// ------------------------------------------------------------ engine

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Ok,
    Slow(u8),
    Retry,
    Permanent,
    Panic,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => Just(Act::Ok),
        2 => (1u8..8).prop_map(Act::Slow),
        2 => Just(Act::Retry),
        1 => Just(Act::Permanent),
        1 => Just(Act::Panic),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    /// Per message: its FIFO group (None: standard queue) and what its handler does.
    items: Vec<(Option<u8>, Act)>,
    concurrency: usize,
    spawn: bool,
    /// A deadline this many ms after the start, if any.
    deadline_ms: Option<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((prop::option::weighted(0.5, 0u8..4), act()), 0..40),
        1usize..12,
        any::<bool>(),
        prop::option::weighted(0.25, 0u8..20),
    )
        .prop_map(|(items, concurrency, spawn, deadline_ms)| Case {
            items,
            concurrency,
            spawn,
            deadline_ms,
        })
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let acts: HashMap<String, Act> = case
        .items
        .iter()
        .enumerate()
        .map(|(i, (_, a))| (format!("m{i}"), *a))
        .collect();
    let acts = Arc::new(acts);
    let runs: Arc<Mutex<Vec<String>>> = Arc::default();
    let (a, r) = (acts.clone(), runs.clone());
    let handler = move |m: Message| {
        let (a, r) = (a.clone(), r.clone());
        async move {
            r.lock().unwrap().push(m.id().to_owned());
            match a[m.id()] {
                Act::Ok => Ok(()),
                Act::Slow(ms) => {
                    tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
                    Ok(())
                }
                Act::Retry => Err(Error::msg("retry me")),
                Act::Permanent => Err(Error::permanent("never")),
                Act::Panic => panic!("handler bug (expected by the property test)"),
            }
        }
    };
    let config = EngineConfig::default()
        .concurrency(case.concurrency)
        .execution(if case.spawn {
            Execution::Spawn
        } else {
            Execution::Inline
        });
    let engine = Engine::with_config(handler, config);
    let batch: Vec<Message> = case
        .items
        .iter()
        .enumerate()
        .map(|(i, (g, _))| {
            let b = Message::builder(format!("m{i}"), format!("{i}"));
            match g {
                // A FIFO message (only those carry a sequence number): its
                // group orders it. On a standard queue a group id is a
                // fair-queue tenant label and forms no lane.
                Some(g) => b
                    .group_id(format!("g{g}"))
                    .sequence_number(i.to_string())
                    .build(),
                None => b.build(),
            }
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let deadline = case
            .deadline_ms
            .map(|ms| Instant::now() + Duration::from_millis(u64::from(ms)));
        engine.run(batch, deadline).await
    });

    // Every input id exactly once, succeeded or failed.
    let mut seen = HashMap::<&str, usize>::new();
    for s in &report.settled {
        *seen.entry(s.message.id()).or_default() += 1;
    }
    prop_assert_eq!(seen.len(), case.items.len(), "ids in the report");
    for (id, n) in &seen {
        prop_assert!(acts.contains_key(*id), "unknown id {} in the report", id);
        prop_assert_eq!(*n, 1, "{} settled {} times", id, n);
    }
    // Handlers run at most once, and only for reported messages.
    let runs = runs.lock().unwrap().clone();
    let ran: HashSet<&str> = runs.iter().map(String::as_str).collect();
    prop_assert_eq!(ran.len(), runs.len(), "a handler ran twice: {:?}", runs);
    // Outcomes match what the handler did.
    for s in &report.settled {
        let id = s.message.id();
        let a = acts[id];
        match s.failure() {
            None => {
                prop_assert!(ran.contains(id), "{} succeeded without running", id);
                prop_assert!(
                    matches!(a, Act::Ok | Act::Slow(_)),
                    "{} succeeded: {:?}",
                    id,
                    a
                );
            }
            Some(f) => {
                if ran.contains(id) && matches!(a, Act::Retry | Act::Permanent | Act::Panic) {
                    prop_assert_eq!(
                        f.is_permanent(),
                        a == Act::Permanent,
                        "{}: {:?}",
                        id,
                        f.kind
                    );
                }
                if !ran.contains(id) {
                    prop_assert!(
                        !f.kind.handler_ran(),
                        "{}: {:?} but it never ran",
                        id,
                        f.kind
                    );
                }
            }
        }
    }
    // Without a deadline every non-blocked message ran, and a FIFO group
    // stops at its first failure: nothing after it in the group ran.
    let mut failed_groups = HashSet::new();
    for (i, (g, a)) in case.items.iter().enumerate() {
        let id = format!("m{i}");
        let Some(g) = g else {
            if case.deadline_ms.is_none() {
                prop_assert!(ran.contains(id.as_str()), "{} never ran", id);
            }
            continue;
        };
        if failed_groups.contains(g) {
            prop_assert!(
                !ran.contains(id.as_str()),
                "{} ran after its group failed",
                id
            );
            let f = report
                .settled
                .iter()
                .find(|s| s.message.id() == id)
                .and_then(|s| s.failure());
            prop_assert!(
                f.is_some_and(
                    |f| f.kind == FailureKind::GroupBlocked || f.kind == FailureKind::Unstarted
                ),
                "{}: {:?}",
                id,
                f.map(|f| f.kind)
            );
        } else if ran.contains(id.as_str()) {
            if matches!(a, Act::Retry | Act::Permanent | Act::Panic) {
                failed_groups.insert(*g);
            }
        } else if case.deadline_ms.is_none() {
            prop_assert!(false, "{} never ran and its group had not failed", id);
        } else {
            // Unstarted at the deadline: the rest of its group is failed too.
            failed_groups.insert(*g);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn engine_reports_every_message_exactly_once(case in case()) {
        run_case(&case)?;
    }
}

// ------------------------------------------------------------ lambda

#[derive(Debug, Clone)]
struct Rec {
    id: String,
    body: String,
    receipt: Option<String>,
    receive_count: u32,
    group: Option<String>,
    dedup: Option<String>,
    attrs: Vec<(String, String, Result<String, Vec<u8>>)>,
    fail: bool,
}

fn attr_value() -> impl Strategy<Value = (String, Result<String, Vec<u8>>)> {
    prop_oneof![
        (
            prop_oneof![Just("String".to_owned()), "String\\.[a-z]{1,8}"],
            any::<String>()
        )
            .prop_map(|(t, s)| (t, Ok(s))),
        (
            prop_oneof![Just("Number".to_owned()), "Number\\.[a-z]{1,8}"],
            "-?[0-9]{1,20}(\\.[0-9]{1,5})?"
        )
            .prop_map(|(t, s)| (t, Ok(s))),
        (
            prop_oneof![Just("Binary".to_owned()), "Binary\\.[a-z]{1,8}"],
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(t, b)| (t, Err(b))),
    ]
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        "[A-Za-z0-9-]{1,40}",
        any::<String>(),
        prop::option::of("[A-Za-z0-9+/=]{1,60}"),
        1u32..1000,
        prop::option::of("[A-Za-z0-9_.-]{1,20}"),
        prop::option::of("[A-Za-z0-9]{1,20}"),
        prop::collection::vec(("[A-Za-z0-9_.-]{1,16}", attr_value()), 0..5),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(id, body, receipt, receive_count, group, dedup, attrs, fail)| Rec {
                id,
                body,
                receipt,
                receive_count,
                group,
                dedup,
                attrs: attrs.into_iter().map(|(n, (t, v))| (n, t, v)).collect(),
                fail,
            },
        )
}

fn to_record(r: &Rec) -> SqsMessage {
    let mut b = record(r.id.clone(), r.body.clone()).receive_count(r.receive_count);
    if let Some(g) = &r.group {
        b = b.group_id(g.clone());
    }
    if let Some(d) = &r.dedup {
        b = b.deduplication_id(d.clone());
    }
    let mut m = b.build();
    m.receipt_handle = r.receipt.clone();
    for (name, data_type, value) in &r.attrs {
        let mut a = SqsMessageAttribute::default();
        a.data_type = Some(data_type.clone());
        match value {
            Ok(s) => a.string_value = Some(s.clone()),
            Err(bytes) => {
                let mut data = Base64Data::default();
                *data = bytes.clone();
                a.binary_value = Some(data);
            }
        }
        m.message_attributes.insert(name.clone(), a);
    }
    m
}

fn check_message(m: &Message, r: &Rec) -> Result<(), TestCaseError> {
    prop_assert_eq!(m.id(), r.id.as_str());
    prop_assert_eq!(m.body(), r.body.as_str());
    prop_assert_eq!(m.receipt_handle(), r.receipt.as_deref().unwrap_or(""));
    prop_assert_eq!(m.receive_count(), r.receive_count);
    prop_assert_eq!(m.group_id(), r.group.as_deref());
    prop_assert_eq!(m.deduplication_id(), r.dedup.as_deref());
    // Names are map keys: the last of duplicates wins.
    let expected: HashMap<&str, (&str, &Result<String, Vec<u8>>)> = r
        .attrs
        .iter()
        .map(|(n, t, v)| (n.as_str(), (t.as_str(), v)))
        .collect();
    prop_assert_eq!(m.message_attributes().len(), expected.len());
    for (name, (data_type, value)) in expected {
        let a = m.message_attribute(name);
        prop_assert!(a.is_some(), "attribute {} missing", name);
        let a = a.unwrap();
        prop_assert_eq!(a.data_type.as_str(), data_type);
        let want = match value {
            Err(b) => AttributeValue::Binary(b.clone()),
            Ok(s) if data_type.starts_with("Number") => AttributeValue::Number(s.clone()),
            Ok(s) => AttributeValue::String(s.clone()),
        };
        prop_assert_eq!(&a.value, &want, "attribute {}", name);
    }
    Ok(())
}

fn run_lambda_case(recs: &[Rec]) -> Result<(), TestCaseError> {
    // Unique ids (Lambda's batchItemFailures name records by id).
    let mut ids = HashSet::new();
    let recs: Vec<Rec> = recs
        .iter()
        .filter(|r| ids.insert(r.id.clone()))
        .cloned()
        .collect();
    let ev = event(recs.iter().map(to_record));
    // What the runtime hands the function: the JSON of the event.
    let json = serde_json::to_vec(&ev).unwrap();
    let payload = serde_json::from_slice::<SqsPayload>(&json);
    prop_assert!(payload.is_ok(), "{:?}", payload.err());
    let ev: SqsEvent = serde_json::from_slice(&json).unwrap();

    // The conversion alone.
    for (record, r) in ev.records.iter().zip(&recs) {
        let m = message_from_record(record.clone(), Visibility::unbacked()).unwrap();
        check_message(&m, r)?;
    }

    // Through the service: every record handled or reported, once.
    let by_id: Arc<HashMap<String, Rec>> =
        Arc::new(recs.iter().map(|r| (r.id.clone(), r.clone())).collect());
    let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
    let (s, b) = (seen.clone(), by_id.clone());
    let handler = move |m: Message| {
        let (s, b) = (s.clone(), b.clone());
        async move {
            let fail = b[m.id()].fail;
            s.lock().unwrap().push(m);
            if fail {
                Err(Error::msg("asked to fail"))
            } else {
                Ok(())
            }
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let resp = rt.block_on(run_event(handler, ev)).unwrap();
    let failed: Vec<String> = failed_ids(&resp).into_iter().map(str::to_owned).collect();
    let failed_set: HashSet<&str> = failed.iter().map(String::as_str).collect();
    prop_assert_eq!(failed_set.len(), failed.len(), "a record reported twice");
    let seen = seen.lock().unwrap().clone();
    let ran: HashSet<&str> = seen.iter().map(Message::id).collect();
    prop_assert_eq!(ran.len(), seen.len(), "a record ran twice");
    for m in &seen {
        check_message(m, &by_id[m.id()])?;
    }
    for r in &recs {
        let id = r.id.as_str();
        // Succeeded = ran and not reported failed; everything else reported.
        let succeeded = ran.contains(id) && !failed_set.contains(id);
        prop_assert!(
            succeeded || failed_set.contains(id),
            "{} neither succeeded nor failed",
            id
        );
        if r.fail && ran.contains(id) {
            prop_assert!(
                failed_set.contains(id),
                "{} failed but was not reported",
                id
            );
        }
        if !r.fail && r.group.is_none() {
            prop_assert!(succeeded, "{} should have succeeded", id);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn lambda_records_convert_losslessly_and_are_reported_once(
        recs in prop::collection::vec(rec(), 0..12)
    ) {
        run_lambda_case(&recs)?;
    }
}
