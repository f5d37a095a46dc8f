//! Engine hot-path cost: a batch of 10 (and 100) messages through the engine,
//! no-op handler and a typed JSON handler with one failing message.
//!
//! Run: `cargo bench -p sqs-worker-core --bench engine`
//! Prints the median of 7 runs, in µs per batch, single-threaded.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use sqs_worker_core::runner::{Engine, Processor};
use sqs_worker_core::{EngineConfig, Error, Json, Message};

#[derive(serde::Deserialize)]
struct Order {
    order_id: u64,
    #[allow(dead_code)]
    customer: String,
    #[allow(dead_code)]
    amount_cents: u64,
}

fn batch(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::builder(
                format!("0f0b6b6e-3d2c-4c1e-9d6b-{i:012}"),
                format!(r#"{{"order_id": {i}, "customer": "c-7", "amount_cents": 1999}}"#),
            )
            .receipt_handle("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a")
            .receive_count(1)
            .build()
        })
        .collect()
}

fn measure<P: Processor>(rt: &tokio::runtime::Runtime, p: &P, n: usize, iters: u32) -> f64 {
    let template = batch(n);
    let mut runs = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        rt.block_on(async {
            for _ in 0..iters {
                let b = template.clone();
                let mut failed = 0usize;
                p.process(b, None, |s| failed += usize::from(!s.is_success()))
                    .await;
                black_box(failed);
            }
        });
        runs.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(iters));
    }
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

async fn noop(_m: Message) -> Result<(), Error> {
    Ok(())
}

async fn typed(Json(o): Json<Order>) -> Result<(), Error> {
    if o.order_id == 3 {
        return Err(Error::msg("order 3 fails"));
    }
    Ok(())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = Duration::ZERO;
    let noop_engine = Engine::new(noop);
    let typed_engine = Engine::new(typed);
    let deadline_engine = Engine::with_config(typed, EngineConfig::default());
    println!("engine benchmark (median of 7 runs, µs per batch, current-thread runtime)");
    for n in [10usize, 100] {
        let iters = if n == 10 { 50_000 } else { 5_000 };
        let a = measure(&rt, &noop_engine, n, iters);
        let b = measure(&rt, &typed_engine, n, iters);
        println!(
            "batch {n:>3}: no-op handler {a:8.2} µs | typed JSON handler, 1 failing {b:8.2} µs"
        );
    }
    // With a deadline (Lambda's path): adds the deadline timer.
    let template = batch(10);
    let mut runs = Vec::new();
    for _ in 0..7 {
        let iters = 50_000u32;
        let start = Instant::now();
        rt.block_on(async {
            for _ in 0..iters {
                let d = Some(Instant::now() + Duration::from_secs(60));
                let r = deadline_engine.run(template.clone(), d).await;
                black_box(r);
            }
        });
        runs.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(iters));
    }
    runs.sort_by(f64::total_cmp);
    println!(
        "batch  10 with a deadline, report collected: {:8.2} µs",
        runs[3]
    );
}
