//! Adapter hot-path cost: a parsed 10-record `SqsEvent` to its
//! `SqsBatchResponse` (conversion, engine, response), with a handler that
//! parses each JSON body and one record failing. Target (issue 8): ≤ 5 µs.
//!
//! Decomposed: the same events through the service's record conversion and
//! the handler without the engine, and through a message of id and body and
//! the handler, so the floor's gap splits into the engine's share, the
//! conversion's and the `Message`'s.
//!
//! Also from the invocation's JSON to the response, what a deployed function
//! runs in process: `run`'s path (the lean `SqsPayload`), the service from an
//! `SqsEvent`, and the hand-written floor from the same bytes.
//!
//! Run: `cargo bench -p sqs-worker-lambda --bench lambda`
//! Prints the median of 9 runs, in µs per event, current-thread runtime.
//!
//! Under callgrind: `LAMBDA_BENCH_SCALE=1` (iterations per run, default 100)
//! and `LAMBDA_BENCH_SIZES=10` (record counts, default `10,100`), e.g.
//! `LAMBDA_BENCH_SCALE=1 LAMBDA_BENCH_SIZES=10 valgrind --tool=callgrind
//! target/release/deps/lambda-*`; `LAMBDA_BENCH_ONLY=event` skips the
//! routed and from-JSON figures. The inclusive cost of
//! `LambdaService::handle`'s future over its calls is instructions per event.
#![allow(missing_docs)]

use std::hint::black_box;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsBatchResponse;
use futures_util::FutureExt;
use sqs_worker_core::runner::{Engine, MessageParts};
use sqs_worker_core::{Error, Handler, IntoHandler, Json, Message, Visibility};
use sqs_worker_lambda::testing::{context, event, record};
use sqs_worker_lambda::{LambdaService, SqsEvent, SqsPayload, message_from_record};

#[derive(serde::Deserialize)]
struct Order {
    order_id: u64,
    #[allow(dead_code)]
    customer: String,
    #[allow(dead_code)]
    amount_cents: u64,
}

async fn typed(Json(o): Json<Order>) -> Result<(), Error> {
    if o.order_id == 3 {
        return Err(Error::msg("order 3 fails"));
    }
    Ok(())
}

fn sample(n: usize) -> SqsEvent {
    event((0..n).map(|i| {
        record(
            format!("0f0b6b6e-3d2c-4c1e-9d6b-{i:012}"),
            format!(r#"{{"order_id": {i}, "customer": "c-7", "amount_cents": 1999}}"#),
        )
        .string_attribute("tenant", "acme")
    }))
}

#[derive(Clone, Copy)]
enum Mode {
    Service,
    Plain,
    Drop,
    NoEngine,
    IdAndBody,
}

/// The service's own conversion of each record ([`message_from_record`]:
/// typed system and message attributes, one allocation per message), then the
/// handler called directly (in `catch_unwind`, polled once) and the failures
/// listed: the service without its engine, spans, metrics and leases. Never
/// inlined, for callgrind (`--toggle-collect=lambda::no_engine*`).
#[inline(never)]
fn no_engine<H: Handler>(handler: &H, event: SqsEvent) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    for r in event.records {
        let m = message_from_record(r, Visibility::unbacked()).expect("an SQS record");
        call(handler, m, &mut resp);
    }
    resp
}

/// As [`no_engine`], with a message of the record's id and body only (no
/// attributes, no source, no receipt handle): what a `Message` and a handler
/// call cost on their own. Never inlined (`--toggle-collect=lambda::id_and_body*`).
#[inline(never)]
fn id_and_body<H: Handler>(handler: &H, event: SqsEvent) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    for r in event.records {
        let (id, body) = (r.message_id.unwrap_or_default(), r.body.unwrap_or_default());
        let m = MessageParts::new(id, body).into_message();
        call(handler, m, &mut resp);
    }
    resp
}

/// Runs `handler` on `m` (polled once, a panic caught) and lists it in `resp`
/// unless it succeeded.
#[inline]
fn call<H: Handler>(handler: &H, m: Message, resp: &mut SqsBatchResponse) {
    let run = AssertUnwindSafe(handler.handle(m.clone())).catch_unwind();
    if !matches!(run.now_or_never(), Some(Ok(Ok(())))) {
        resp.add_failure(m.id());
    }
}

/// The plainest correct Lambda handler for the same work, written by hand:
/// parse each body, report the records that fail. The floor the service is
/// compared with. Never inlined, so that callgrind can count it alone
/// (`--toggle-collect=lambda::plain`, the event's drop included).
#[inline(never)]
fn plain(event: SqsEvent) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    for r in event.records {
        let ok = r
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<Order>(b).ok())
            .is_some_and(|o| o.order_id != 3);
        if !ok {
            resp.add_failure(r.message_id.unwrap_or_default());
        }
    }
    resp
}

/// Runs per figure; the median is printed.
const RUNS: usize = 9;
/// Events cloned ahead of each timed stretch.
const CHUNK: usize = 50;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let service = LambdaService::new(Engine::new(typed));
    let handler = typed.into_handler();
    let ctx = context(Duration::from_secs(900));
    let scale: u32 = std::env::var("LAMBDA_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let sizes: Vec<usize> = std::env::var("LAMBDA_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100]);
    println!(
        "lambda adapter benchmark (median of {RUNS} alternating runs, µs per event, \
         current-thread runtime)"
    );
    for &n in &sizes {
        let iters = if n == 10 { 500 * scale } else { 50 * scale };
        let template = sample(n);
        // Events are cloned outside the timed region, CHUNK at a time (still
        // warm in cache, as after the runtime's deserialization); only
        // handling them is timed. Three ways, alternating run by run so load
        // on the machine hits all alike: the service; the plainest correct
        // hand-written handler (parse each body, list the failures: no panic
        // isolation, FIFO, deadline or metrics), the floor; and dropping the
        // event alone, its own cost.
        let time = |mode: Mode| {
            let mut elapsed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let events: Vec<SqsEvent> = (0..CHUNK).map(|_| template.clone()).collect();
                let start = Instant::now();
                rt.block_on(async {
                    for ev in events {
                        let ev = black_box(ev);
                        match mode {
                            Mode::Service => {
                                let resp = service.handle(ev, &ctx).await.expect("an SQS event");
                                assert_eq!(resp.batch_item_failures.len(), 1);
                                black_box(resp);
                            }
                            Mode::Plain => {
                                let resp = plain(ev);
                                assert_eq!(resp.batch_item_failures.len(), 1);
                                black_box(resp);
                            }
                            Mode::Drop => drop(ev),
                            Mode::NoEngine | Mode::IdAndBody => {
                                let resp = match mode {
                                    Mode::NoEngine => no_engine(&handler, ev),
                                    _ => id_and_body(&handler, ev),
                                };
                                assert_eq!(resp.batch_item_failures.len(), 1);
                                black_box(resp);
                            }
                        }
                    }
                });
                elapsed += start.elapsed();
                done += CHUNK as u32;
            }
            elapsed.as_secs_f64() * 1e6 / f64::from(done)
        };
        let (mut with, mut floor, mut without) = (Vec::new(), Vec::new(), Vec::new());
        let (mut unengined, mut bare) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            with.push(time(Mode::Service));
            floor.push(time(Mode::Plain));
            without.push(time(Mode::Drop));
            unengined.push(time(Mode::NoEngine));
            bare.push(time(Mode::IdAndBody));
        }
        let (with, floor, without) = (median(with), median(floor), median(without));
        let (unengined, bare) = (median(unengined), median(bare));
        println!(
            "{n:>4} records, 1 failing: {:>8.2} µs per event beyond dropping it \
             (handling and dropping it {with:.2} µs, dropping it alone {without:.2} µs)",
            with - without
        );
        println!(
            "{n:>4} records, hand-written floor: {:>5.2} µs beyond dropping it ({floor:.2} µs with); \
             the service costs {:.2}x the floor with the drop, {:.2}x beyond it",
            floor - without,
            with / floor,
            (with - without) / (floor - without)
        );
        println!(
            "{n:>4} records, decomposed (with the drop): the conversion and the handler without \
             the engine {unengined:.2} µs ({:.2}x the floor); a message of id and body and the \
             handler {bare:.2} µs ({:.2}x)",
            unengined / floor,
            bare / floor
        );
    }

    // `LAMBDA_BENCH_ONLY=event`: only the parsed-event figures above (for
    // profiling them alone: under callgrind, `--toggle-collect` on
    // `*LambdaService*handle::{{closure}}` then counts the service's events only).
    if std::env::var("LAMBDA_BENCH_ONLY").is_ok_and(|v| v == "event") {
        return;
    }
    routed_vs_typed(&rt, &service, &ctx, scale);
    for &n in &sizes {
        from_json(&rt, &service, &ctx, n, scale);
    }
}

/// Where a from-JSON run starts.
#[derive(Clone, Copy)]
enum FromJson {
    /// What `run` does: `SqsPayload::from_json`, then `handle_payload`.
    Run,
    /// `SqsEvent` from the JSON, then `LambdaService::handle`.
    Event,
    /// The hand-written floor from the same bytes: `SqsEvent` from the JSON
    /// (plain `serde_json`, cheaper than the runtime's path-tracking parse a
    /// plain `lambda_runtime` function pays), then `plain`.
    Floor,
}

/// Per event from the invocation's JSON to the response, as a deployed
/// function runs it in process (the runtime's HTTP aside): `run`'s path, the
/// service from an `SqsEvent`, and the floor from the same bytes, alternating
/// run by run; medians of 9 runs.
fn from_json(
    rt: &tokio::runtime::Runtime,
    service: &LambdaService<Engine<impl sqs_worker_core::Handler>>,
    ctx: &lambda_runtime::Context,
    n: usize,
    scale: u32,
) {
    let json = serde_json::to_string(&sample(n)).expect("json");
    let iters = if n == 10 { 200 * scale } else { 20 * scale };
    let time = |mode: FromJson| {
        let start = Instant::now();
        rt.block_on(async {
            for _ in 0..iters {
                let text = black_box(json.as_str());
                let failures = match mode {
                    FromJson::Run => {
                        let p = SqsPayload::from_json(text).expect("payload");
                        let resp = service.handle_payload(p, ctx).await;
                        resp.expect("an SQS event").batch_item_failures.len()
                    }
                    FromJson::Event => {
                        let e: SqsEvent = serde_json::from_str(text).expect("event");
                        let resp = service.handle(e, ctx).await;
                        resp.expect("an SQS event").batch_item_failures.len()
                    }
                    FromJson::Floor => {
                        let e: SqsEvent = serde_json::from_str(text).expect("event");
                        plain(e).batch_item_failures.len()
                    }
                };
                assert_eq!(failures, 1);
            }
        });
        start.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
    };
    let (mut run, mut event, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        run.push(time(FromJson::Run));
        event.push(time(FromJson::Event));
        floor.push(time(FromJson::Floor));
    }
    let (run, event, floor) = (median(run), median(event), median(floor));
    println!(
        "{n:>4} records from JSON: run's path (SqsPayload) {run:>7.2} µs, via SqsEvent \
         {event:>7.2} µs, hand-written floor {floor:>7.2} µs; run's path costs {:.2}x the floor",
        run / floor
    );
}

/// A `Router` with the typed handler as its route (type from the `type`
/// attribute, the default) against the typed handler alone, on the same
/// 10-record events (each with a `type` attribute), alternating run by run.
fn routed_vs_typed(
    rt: &tokio::runtime::Runtime,
    typed_service: &LambdaService<Engine<impl sqs_worker_core::Handler>>,
    ctx: &lambda_runtime::Context,
    scale: u32,
) {
    let routed = LambdaService::new(Engine::new(
        sqs_worker_core::Router::new()
            .route("OrderPlaced", typed)
            .route("OrderCancelled", typed),
    ));
    let template = event((0..10).map(|i| {
        record(
            format!("0f0b6b6e-3d2c-4c1e-9d6b-{i:012}"),
            format!(r#"{{"order_id": {i}, "customer": "c-7", "amount_cents": 1999}}"#),
        )
        .string_attribute("tenant", "acme")
        .string_attribute("type", "OrderPlaced")
    }));
    let iters = 500 * scale;
    let time = |route: bool| {
        let mut done = 0;
        let mut elapsed = Duration::ZERO;
        while done < iters {
            let events: Vec<SqsEvent> = (0..CHUNK).map(|_| template.clone()).collect();
            let start = Instant::now();
            rt.block_on(async {
                for ev in events {
                    let resp = if route {
                        routed.handle(black_box(ev), ctx).await
                    } else {
                        typed_service.handle(black_box(ev), ctx).await
                    };
                    let resp = resp.expect("an SQS event");
                    assert_eq!(resp.batch_item_failures.len(), 1);
                    black_box(resp);
                }
            });
            elapsed += start.elapsed();
            done += CHUNK as u32;
        }
        elapsed.as_secs_f64() * 1e6 / f64::from(done)
    };
    let (mut plain, mut via_router) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        plain.push(time(false));
        via_router.push(time(true));
    }
    let (plain, via_router) = (median(plain), median(via_router));
    println!(
        "  10 records, routed by the `type` attribute: {via_router:.2} µs per event \
         vs {plain:.2} µs for the typed handler alone ({:+.1}%)",
        100.0 * (via_router / plain - 1.0)
    );
}
