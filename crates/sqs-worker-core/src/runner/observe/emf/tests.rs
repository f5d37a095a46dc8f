//! The EMF recorder's lines.

use super::*;

/// A flush of `r`: its text, and each line parsed.
fn flush(r: &EmfRecorder) -> (String, Vec<serde_json::Value>) {
    let mut out = Vec::new();
    r.flush_to(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (text, lines)
}

fn env(vars: &'static [(&'static str, &'static str)]) -> Env<impl Fn(&str) -> Option<String>> {
    Env::from_fn(move |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
}

#[test]
fn namespace_and_service_come_from_the_environment() {
    let r = EmfRecorder::from_env(&env(&[
        ("SQS_WORKER_METRICS_NAMESPACE", "orders-prod"),
        ("SQS_WORKER_SERVICE", "orders"),
        ("AWS_LAMBDA_FUNCTION_NAME", "orders-fn"),
    ]))
    .unwrap();
    assert_eq!((r.namespace(), r.service()), ("orders-prod", "orders"));
    metrics::with_local_recorder(&r, || {
        metrics::counter!("sqs_worker_messages_received_total").increment(1);
    });
    let mut out = Vec::new();
    r.flush_to(&mut out).unwrap();
    let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "orders-prod"
    );
    assert_eq!(line["service"], "orders");

    let r = EmfRecorder::from_env(&env(&[("AWS_LAMBDA_FUNCTION_NAME", "orders-fn")])).unwrap();
    assert_eq!(
        (r.namespace(), r.service()),
        (DEFAULT_NAMESPACE, "orders-fn")
    );
    let r = EmfRecorder::from_env(&env(&[])).unwrap();
    assert_eq!(
        (r.namespace(), r.service()),
        (DEFAULT_NAMESPACE, DEFAULT_SERVICE)
    );
    let err =
        EmfRecorder::from_env(&env(&[("SQS_WORKER_METRICS_NAMESPACE", "AWS/SQS")])).unwrap_err();
    assert!(
        err.to_string().contains("SQS_WORKER_METRICS_NAMESPACE"),
        "{err}"
    );
}

#[test]
fn writes_emf_lines_with_deltas_and_values() {
    let r = EmfRecorder::new("ns");
    metrics::with_local_recorder(&r, || {
        metrics::counter!("sqs_worker_messages_succeeded_total").increment(9);
        metrics::counter!("sqs_worker_messages_failed_total", "kind" => "retry").increment(1);
        metrics::histogram!("sqs_worker_handler_duration_seconds").record(0.25);
    });
    let (text, lines) = flush(&r);
    assert_eq!(lines.len(), 2, "{text}");
    let plain = lines.iter().find(|l| l.get("kind").is_none()).unwrap();
    assert_eq!(plain["sqs_worker_messages_succeeded_total"], 9);
    assert_eq!(
        plain["sqs_worker_handler_duration_seconds"],
        serde_json::json!([0.25])
    );
    assert_eq!(plain["_aws"]["CloudWatchMetrics"][0]["Namespace"], "ns");
    let failed = lines.iter().find(|l| l.get("kind").is_some()).unwrap();
    assert_eq!(failed["kind"], "retry");
    assert_eq!(
        failed["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["service", "kind"]])
    );
    // A second flush writes only what changed since.
    metrics::with_local_recorder(&r, || {
        metrics::counter!("sqs_worker_messages_succeeded_total").increment(1);
    });
    let mut out = Vec::new();
    r.flush_to(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("\"sqs_worker_messages_succeeded_total\":1"),
        "{text}"
    );
}

/// EMF allows 100 values per metric in one line: a flush with more
/// writes them all, on further lines (before, values past the first 100
/// of a flush were dropped).
#[test]
fn histogram_values_past_a_lines_limit_go_on_further_lines() {
    let r = EmfRecorder::new("ns");
    metrics::with_local_recorder(&r, || {
        for i in 0..250 {
            metrics::histogram!("sqs_worker_handler_duration_seconds").record(f64::from(i));
        }
        metrics::counter!("sqs_worker_messages_succeeded_total").increment(250);
    });
    let (text, lines) = flush(&r);
    assert_eq!(lines.len(), 3, "{text}");
    let mut seen = Vec::new();
    for l in &lines {
        let v = l["sqs_worker_handler_duration_seconds"].as_array().unwrap();
        assert!(v.len() <= 100);
        seen.extend(v.iter().map(|v| v.as_f64().unwrap()));
        let names: Vec<&str> = l["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"sqs_worker_handler_duration_seconds"));
        // Every metric a line names has its value in the line.
        assert!(names.iter().all(|n| l.get(*n).is_some()), "{l}");
    }
    assert_eq!(seen, (0..250).map(f64::from).collect::<Vec<_>>());
    let counted: u64 = lines
        .iter()
        .filter_map(|l| l["sqs_worker_messages_succeeded_total"].as_u64())
        .sum();
    assert_eq!(counted, 250, "the counter once: {text}");
}

#[test]
fn labels_are_escaped_and_gauges_written_every_flush() {
    let r = EmfRecorder::with_service("ns \"q\"", "svc\\1");
    metrics::with_local_recorder(&r, || {
        metrics::gauge!("sqs_worker_circuit_state", "queue" => "a\"b\\c é").set(1.0);
        metrics::gauge!("sqs_worker_in_flight").set(f64::NAN);
    });
    for _ in 0..2 {
        let (text, lines) = flush(&r);
        assert_eq!(lines.len(), 2, "{text}");
        let labelled = lines.iter().find(|l| l.get("queue").is_some()).unwrap();
        assert_eq!(labelled["queue"], "a\"b\\c é");
        assert_eq!(labelled["service"], "svc\\1");
        assert_eq!(labelled["sqs_worker_circuit_state"], 1.0);
        let aws = &labelled["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(aws["Namespace"], "ns \"q\"");
        assert_eq!(aws["Dimensions"], serde_json::json!([["service", "queue"]]));
        let plain = lines.iter().find(|l| l.get("queue").is_none()).unwrap();
        // Not a number: written as null, as serde_json writes it.
        assert!(plain["sqs_worker_in_flight"].is_null(), "{text}");
    }
}
