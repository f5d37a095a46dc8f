//! The adaptive limit against a simulated downstream, in paused time.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::*;

/// A database with 8 useful slots: a call takes 10 ms while at most 8 run,
/// and proportionally longer beyond (`10 ms × n / 8` with `n` calls running
/// when it starts), so more than 8 at once adds latency, not throughput.
fn db_latency(running: usize) -> Duration {
    Duration::from_millis(10).mul_f64((running as f64 / 8.0).max(1.0))
}

/// Keeps `limit()` calls running against the database, with an endless
/// backlog; returns (calls per second, p99 latency) over 20 s after 5 s of
/// warm-up.
async fn drive(limit: impl Fn() -> usize, on_done: impl Fn(Duration, usize)) -> (f64, Duration) {
    let (warm_up, run) = (Duration::from_secs(5), Duration::from_secs(20));
    let start = Instant::now();
    let mut running = FuturesUnordered::new();
    let mut latencies = Vec::new();
    loop {
        while running.len() < limit() {
            let lat = db_latency(running.len() + 1);
            running.push(async move {
                tokio::time::sleep(lat).await;
                lat
            });
        }
        let Some(lat) = running.next().await else {
            break;
        };
        on_done(lat, running.len() + 1);
        let t = start.elapsed();
        if t >= warm_up + run {
            break;
        }
        if t >= warm_up {
            latencies.push(lat);
        }
    }
    let per_s = latencies.len() as f64 / run.as_secs_f64();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    (per_s, p99)
}

/// Issue 16 §4: with adaptive concurrency from 1 to 64, throughput is within
/// 10 % of the best fixed setting and p99 latency well below the fixed
/// setting of 64.
#[tokio::test(start_paused = true)]
async fn adaptive_matches_the_best_fixed_throughput_at_a_fraction_of_the_latency() {
    let mut best = 0.0f64;
    let mut p99_at_64 = Duration::ZERO;
    for fixed in [4, 8, 12, 16, 32, 64] {
        let (per_s, p99) = drive(|| fixed, |_, _| {}).await;
        best = best.max(per_s);
        if fixed == 64 {
            p99_at_64 = p99;
        }
    }
    let limit = AdaptiveLimit::new(AdaptiveConcurrency::new(1..=64));
    let (per_s, p99) = drive(
        || limit.limit(),
        |lat, in_flight| limit.record(Verdict::Success, lat, in_flight),
    )
    .await;
    eprintln!(
        "adaptive: {per_s:.0}/s, p99 {p99:?}, limit {}; best fixed {best:.0}/s, p99 at 64 {p99_at_64:?}",
        limit.limit()
    );
    assert!(
        per_s >= 0.9 * best,
        "adaptive {per_s:.0}/s against the best fixed {best:.0}/s"
    );
    assert!(
        p99 * 2 <= p99_at_64,
        "adaptive p99 {p99:?} against {p99_at_64:?} at a fixed 64"
    );
    assert!((8..=32).contains(&limit.limit()), "{}", limit.limit());
}

/// Failures halve the limit down to the minimum; once they stop, it climbs
/// back while latency stays healthy; without load it does not climb.
#[test]
fn failures_lower_the_limit_and_health_raises_it_again() {
    let limit = AdaptiveLimit::new(AdaptiveConcurrency::new(2..=64));
    let ms = Duration::from_millis(20);
    for _ in 0..200 {
        limit.record(Verdict::Success, ms, limit.limit());
    }
    assert_eq!(limit.limit(), 64, "healthy and busy: up to the maximum");
    for _ in 0..200 {
        limit.record(Verdict::Failure, ms, limit.limit());
    }
    assert_eq!(limit.limit(), 2, "failing: down to the minimum");
    for _ in 0..50 {
        limit.record(Verdict::Neutral, ms, limit.limit());
    }
    assert_eq!(limit.limit(), 2, "neutral results say nothing");
    for _ in 0..2000 {
        limit.record(Verdict::Success, ms, 0);
    }
    assert_eq!(limit.limit(), 2, "idle: no reason to raise it");
    for _ in 0..2000 {
        limit.record(Verdict::Success, ms, limit.limit());
    }
    assert!(limit.limit() >= 32, "recovered to {}", limit.limit());
    assert!(AdaptiveConcurrency::new(0..=4).check().is_err());
    let (lo, hi) = (5, 4);
    assert!(AdaptiveConcurrency::new(lo..=hi).check().is_err());
    assert!(
        AdaptiveConcurrency::new(1..=4)
            .latency_tolerance(1.0)
            .check()
            .is_err()
    );
}
