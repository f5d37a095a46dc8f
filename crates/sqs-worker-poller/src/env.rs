//! The poller's environment ([`Poller::from_env`]) and the start-up checks
//! of settings that depend on the queue or the platform.

use std::time::Duration;

use sqs_worker_core::IntoHandler;
use sqs_worker_core::config::{ConfigError, Env, MAX_CONCURRENCY, parse_go_duration, var};
use sqs_worker_core::flow::{BreakerConfig, RateLimit};
use sqs_worker_core::runner::Engine;

use crate::config::{PollerBuilder, Queue, Settings};
use crate::protection::ScaleInProtection;
use crate::run::Poller;

/// What the shutdown needs after the grace period (release the unfinished
/// messages, flush deletes) before the platform's SIGKILL.
pub(crate) const FLUSH_ALLOWANCE: Duration = Duration::from_secs(5);

impl Poller<()> {
    /// A poller running `handler`, configured from the environment
    /// (synchronous, like the Lambda runner's `from_env`): `SQS_QUEUE_URL`
    /// (or `SQS_QUEUE_NAME`) and the `SQS_WORKER_*` variables the README's
    /// configuration table marks "poller" (names in
    /// [`sqs_worker_core::config::var`]). Durations are seconds, fractions
    /// allowed, except `SQS_WORKER_WAIT_SECONDS` (whole seconds, 0–20).
    ///
    /// A malformed value is an error naming the variable; the returned
    /// builder takes further options, and [`build`](PollerBuilder::build)
    /// validates the whole. Credentials, region and endpoint come from
    /// `aws-config` (`AWS_REGION`, `AWS_ENDPOINT_URL`, …) when the poller
    /// starts.
    pub fn from_env<A, H>(handler: H) -> Result<PollerBuilder<Engine<H::Handler>>, ConfigError>
    where
        H: IntoHandler<A> + Send + 'static,
    {
        from_env_in(handler, &Env::process())
    }
}

pub(crate) fn from_env_in<A, H, F>(
    handler: H,
    env: &Env<F>,
) -> Result<PollerBuilder<Engine<H::Handler>>, ConfigError>
where
    H: IntoHandler<A> + Send + 'static,
    F: Fn(&str) -> Option<String>,
{
    let queue = match (env.string(var::QUEUE_URL), env.string(var::QUEUE_NAME)) {
        (Some(url), _) => Queue::Url(url),
        (None, Some(name)) => Queue::Name(name),
        (None, None) => {
            return Err(ConfigError::MissingEnv {
                var: var::QUEUE_URL,
                hint: "the URL of the queue to poll",
            });
        }
    };
    let mut b = Poller::builder(queue, handler);
    if let Some(n) = env.count(var::CONCURRENCY)? {
        b = b.concurrency(n);
    }
    if let Some(n) = env.count(var::RECEIVERS)? {
        b = b.receivers(n);
    }
    if let Some(d) = env.whole_seconds(var::WAIT_SECONDS)? {
        if d > Duration::from_secs(20) {
            return Err(ConfigError::InvalidEnv {
                var: var::WAIT_SECONDS,
                value: d.as_secs().to_string(),
                reason: "expected whole seconds from 0 to 20".into(),
            });
        }
        b = b.wait_time(d);
    }
    let visibility = env.seconds_or_renamed(
        var::VISIBILITY_TIMEOUT_SECONDS,
        var::OLD_VISIBILITY_TIMEOUT,
        Duration::from_secs(1),
    )?;
    if let Some(d) = visibility {
        b = b.visibility_timeout(d);
    }
    if let Some(d) = env.seconds(var::HEARTBEAT_SECONDS)? {
        b = b.heartbeat_interval(d);
    }
    if let Some(d) = env.seconds(var::MAX_PROCESSING_SECONDS)? {
        b = b.max_processing_time(d);
    }
    if let Some(url) = env.string(var::DLQ_URL) {
        b = b.dead_letter_queue(url);
    }
    if let Some(d) = env.seconds(var::GRACE_SECONDS)? {
        b = b.grace_period(d);
    }
    if let Some(d) = env.seconds(var::IDLE_EXIT_SECONDS)? {
        b = b.idle_exit(d);
    }
    if let Some(d) = env.seconds(var::STATS_SECONDS)? {
        b = b.stats_interval(d);
    }
    if let Some(p) = scale_in_protection(env)? {
        b = b.scale_in_protection(p);
    }
    if let Some(d) = env.seconds(var::RETRY_WINDOW_SECONDS)? {
        b = b.retry_window(d);
    }
    if env.flag(var::CIRCUIT_BREAKER)? == Some(true) {
        b = b.circuit_breaker(BreakerConfig::default());
    }
    if let Some(r) = env.per_second(var::RATE_LIMIT)? {
        b = b.rate_limit(RateLimit::per_second(r));
    }
    if env.flag(var::ADAPTIVE_CONCURRENCY)? == Some(true) {
        let max = env
            .count(var::CONCURRENCY)?
            .unwrap_or(crate::config::DEFAULT_CONCURRENCY);
        b = b.adaptive_concurrency(1..=max);
    }
    if let Some(n) = env.count(var::MAX_IN_FLIGHT_PER_GROUP)? {
        b = b.max_in_flight_per_group(n);
    }
    if let Some(v) = env.string(var::RECEIVE_AHEAD) {
        match v.parse::<usize>() {
            Ok(n) if n <= MAX_CONCURRENCY => b = b.receive_ahead(n),
            _ => {
                return Err(ConfigError::InvalidEnv {
                    var: var::RECEIVE_AHEAD,
                    value: v,
                    reason: format!("expected a whole number from 0 to {MAX_CONCURRENCY}"),
                });
            }
        }
    }
    Ok(b)
}

/// Scale-in protection: on inside ECS (`ECS_AGENT_URI` set) unless switched
/// off; switched on outside ECS, it stays off with a warning (nothing to call).
fn scale_in_protection<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<Option<ScaleInProtection>, ConfigError> {
    let switch = env.flag(var::SCALE_IN_PROTECTION)?;
    let expiry = env.seconds(var::SCALE_IN_PROTECTION_EXPIRY_SECONDS)?;
    let idle = env.seconds(var::SCALE_IN_PROTECTION_IDLE_SECONDS)?;
    let Some(agent) = env.string(var::ECS_AGENT_URI) else {
        if switch == Some(true) {
            tracing::warn!(
                "{} is on but {} is not set (not on ECS): scale-in protection is off",
                var::SCALE_IN_PROTECTION,
                var::ECS_AGENT_URI
            );
        }
        return Ok(None);
    };
    if switch == Some(false) {
        return Ok(None);
    }
    let mut p = ScaleInProtection::new(agent);
    if let Some(d) = expiry {
        p = p.expiry(d);
    }
    if let Some(d) = idle {
        p = p.idle_after(d);
    }
    Ok(Some(p))
}

/// The visibility timeout and heartbeat interval of a run, once the queue's
/// own visibility timeout is known. Refuses a visibility timeout of 0 (every
/// message would be visible to other consumers while it runs) and a heartbeat
/// not below the visibility timeout (messages would reappear between
/// extensions); warns when the heartbeat is above half of it.
pub(crate) fn lease_timing(
    s: &Settings,
    queue_visibility: Duration,
) -> Result<(Duration, Duration), ConfigError> {
    let visibility = s.visibility_timeout.unwrap_or(queue_visibility);
    if visibility.is_zero() {
        return Err(ConfigError::invalid(
            "visibility_timeout",
            format!(
                "queue {}'s visibility timeout is 0 s: messages would be handed to other \
                 consumers while they run; set at least 1 s on the queue or with \
                 `visibility_timeout` ({})",
                s.queue,
                var::VISIBILITY_TIMEOUT_SECONDS
            ),
        ));
    }
    let heartbeat = s
        .heartbeat_interval
        .unwrap_or_else(|| (visibility / 3).max(Duration::from_millis(100)));
    if heartbeat >= visibility {
        return Err(ConfigError::invalid(
            "heartbeat_interval",
            format!(
                "{heartbeat:?} is not below the visibility timeout {visibility:?}: messages \
                 would reappear between heartbeats"
            ),
        ));
    }
    if heartbeat * 2 > visibility {
        tracing::warn!(
            heartbeat_ms = heartbeat.as_millis() as u64,
            visibility_timeout_s = visibility.as_secs(),
            "the heartbeat interval is not well below the visibility timeout: long-running \
             messages may become visible again between extensions (keep it under a half)"
        );
    }
    Ok((visibility, heartbeat))
}

/// Tells the default retry policy the queue's `maxReceiveCount` (from its
/// redrive policy), and warns when the retry window does not fit in it.
pub(crate) fn apply_retry_budget(s: &Settings, max_receive_count: Option<u32>) {
    let Some(budget) = &s.retry_budget else {
        return;
    };
    budget.set_max_receive_count(max_receive_count);
    match max_receive_count {
        Some(n) if !budget.fits() => tracing::warn!(
            max_receive_count = n,
            retry_window_s = budget.window().as_secs_f64(),
            "the retry window is too long for the queue's maxReceiveCount (a retry delay \
             would pass SQS's 12-hour limit): failing messages reach the DLQ sooner; raise \
             maxReceiveCount or shorten {}",
            var::RETRY_WINDOW_SECONDS
        ),
        Some(n) => tracing::info!(
            max_receive_count = n,
            retry_window_s = budget.window().as_secs_f64(),
            "retries of a failing message are spread over the retry window"
        ),
        None => {}
    }
}

/// The start-up warning when ECS's stop timeout (`ECS_CONTAINER_STOP_TIMEOUT`,
/// when set) leaves less than [`FLUSH_ALLOWANCE`] after the grace period: the
/// release-and-flush phase would be cut by SIGKILL.
pub(crate) fn stop_timeout_warning(
    grace: Duration,
    ecs_stop_timeout: Option<&str>,
) -> Option<String> {
    let raw = ecs_stop_timeout?.trim();
    if raw.is_empty() {
        return None;
    }
    let Some(stop) = parse_go_duration(raw) else {
        return Some(format!(
            "{}={raw:?} is not a duration: cannot check that the grace period ({grace:?}) fits",
            var::ECS_CONTAINER_STOP_TIMEOUT
        ));
    };
    (stop < grace + FLUSH_ALLOWANCE).then(|| {
        format!(
            "the grace period ({grace:?}, {}) is not at least {FLUSH_ALLOWANCE:?} below ECS's \
             stop timeout ({stop:?}, {}): SIGKILL may cut the release of unfinished messages \
             and the last deletes; lower the grace period or raise the stop timeout",
            var::GRACE_SECONDS,
            var::ECS_CONTAINER_STOP_TIMEOUT
        )
    })
}

/// What to say when a custom processor's handler time limit (`limit`) does
/// not stop a handler by its maximum processing time: the heartbeat stops
/// extending the message then, SQS hands it to another consumer while the
/// handler still runs (on a FIFO queue, a second consumer in its group).
pub(crate) fn time_limit_warning(
    limit: Option<Duration>,
    max_processing: Duration,
) -> Option<String> {
    let what = match limit {
        Some(l) if l <= max_processing => return None,
        Some(l) => format!("a handler time limit of {l:?}"),
        None => "no handler time limit".to_owned(),
    };
    Some(format!(
        "the processor has {what}, above the maximum processing time ({max_processing:?}): a \
         handler still running then loses its message's visibility, and SQS hands the message \
         (on a FIFO queue, its group) to another consumer while it runs; set \
         `EngineConfig::handler_timeout` to at most the maximum processing time"
    ))
}

#[cfg(test)]
mod tests {

    use sqs_worker_core::{Error, Message};

    use super::*;
    use crate::config::{DEFAULT_GRACE_PERIOD, DEFAULT_WAIT_TIME};

    async fn ok(_m: Message) -> Result<(), Error> {
        Ok(())
    }

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_pairs(pairs)
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut all = vec![("SQS_QUEUE_URL", "http://x/q")];
        all.extend_from_slice(pairs);
        from_env_in(ok, &env(&all))
            .unwrap()
            .build()
            .unwrap()
            .settings()
            .clone()
    }

    #[test]
    fn env_names_the_bad_variable() {
        let e = from_env_in(ok, &env(&[])).unwrap_err();
        assert!(e.to_string().contains("SQS_QUEUE_URL"), "{e}");
        for var in [
            "SQS_WORKER_CONCURRENCY",
            "SQS_WORKER_RECEIVERS",
            "SQS_WORKER_WAIT_SECONDS",
            "SQS_WORKER_VISIBILITY_TIMEOUT_SECONDS",
            "SQS_WORKER_VISIBILITY_TIMEOUT",
            "SQS_WORKER_HEARTBEAT_SECONDS",
            "SQS_WORKER_MAX_PROCESSING_SECONDS",
            "SQS_WORKER_GRACE_SECONDS",
            "SQS_WORKER_IDLE_EXIT_SECONDS",
            "SQS_WORKER_STATS_SECONDS",
        ] {
            let e = from_env_in(ok, &env(&[("SQS_QUEUE_URL", "http://x/q"), (var, "ten")]))
                .unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
        for wait in ["21", "1.5"] {
            let e = from_env_in(
                ok,
                &env(&[
                    ("SQS_QUEUE_URL", "http://x/q"),
                    ("SQS_WORKER_WAIT_SECONDS", wait),
                ]),
            )
            .unwrap_err();
            assert!(e.to_string().contains("SQS_WORKER_WAIT_SECONDS"), "{e}");
        }
    }

    #[test]
    fn scale_in_protection_is_on_inside_ecs_unless_switched_off() {
        assert_eq!(settings(&[]).scale_in_protection, None);
        let agent = ("ECS_AGENT_URI", "http://169.254.170.2/api/task");
        let on = settings(&[agent]).scale_in_protection;
        assert_eq!(on, Some(ScaleInProtection::new(agent.1)));
        let tuned = settings(&[
            agent,
            ("SQS_WORKER_SCALE_IN_PROTECTION_EXPIRY_SECONDS", "120"),
            ("SQS_WORKER_SCALE_IN_PROTECTION_IDLE_SECONDS", "5"),
        ])
        .scale_in_protection;
        assert_eq!(
            tuned,
            Some(
                ScaleInProtection::new(agent.1)
                    .expiry(Duration::from_secs(120))
                    .idle_after(Duration::from_secs(5))
            )
        );
        let off = [agent, ("SQS_WORKER_SCALE_IN_PROTECTION", "false")];
        assert_eq!(settings(&off).scale_in_protection, None);
        let outside = [("SQS_WORKER_SCALE_IN_PROTECTION", "true")];
        assert_eq!(settings(&outside).scale_in_protection, None);
        let bad = [
            ("SQS_QUEUE_URL", "q"),
            agent,
            ("SQS_WORKER_SCALE_IN_PROTECTION", "maybe"),
        ];
        let err = from_env_in(ok, &env(&bad)).unwrap_err();
        assert!(
            err.to_string().contains("SQS_WORKER_SCALE_IN_PROTECTION"),
            "{err}"
        );
    }

    #[test]
    fn env_values_land_in_the_settings() {
        let s = settings(&[
            ("SQS_WORKER_CONCURRENCY", "8"),
            ("SQS_WORKER_VISIBILITY_TIMEOUT_SECONDS", "30"),
            ("SQS_WORKER_HEARTBEAT_SECONDS", "2.5"),
            ("SQS_WORKER_DLQ_URL", "http://x/dlq"),
            ("SQS_WORKER_IDLE_EXIT_SECONDS", "5"),
            ("SQS_WORKER_GRACE_SECONDS", "12.5"),
            ("SQS_WORKER_WAIT_SECONDS", "3"),
        ]);
        assert_eq!(s.queue, Queue::Url("http://x/q".into()));
        assert_eq!(s.concurrency, 8);
        // Two loops: receiving ahead on a standard queue.
        assert_eq!(s.receivers, 2);
        assert_eq!(s.visibility_timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.heartbeat_interval, Some(Duration::from_millis(2500)));
        assert_eq!(s.dead_letter_queue.as_deref(), Some("http://x/dlq"));
        assert_eq!(s.idle_exit, Some(Duration::from_secs(5)));
        assert_eq!(s.grace_period, Duration::from_millis(12_500));
        assert_eq!(s.wait_time, Duration::from_secs(3));
        let d = settings(&[]);
        assert_eq!(d.grace_period, DEFAULT_GRACE_PERIOD);
        assert_eq!(d.wait_time, DEFAULT_WAIT_TIME);
        assert_eq!(d.receive_ahead, crate::DEFAULT_RECEIVE_AHEAD);
        let off = settings(&[
            ("SQS_WORKER_RECEIVE_AHEAD", "0"),
            ("SQS_WORKER_CONCURRENCY", "8"),
        ]);
        assert_eq!((off.receive_ahead, off.receivers), (0, 1));
        let fifo = [
            ("SQS_QUEUE_URL", "http://x/q.fifo"),
            ("SQS_WORKER_CONCURRENCY", "8"),
        ];
        let fifo = from_env_in(ok, &env(&fifo)).unwrap().build().unwrap();
        assert_eq!(
            fifo.settings().receivers,
            1,
            "no receive ahead on FIFO queues"
        );
        let e = from_env_in(
            ok,
            &env(&[("SQS_QUEUE_URL", "q"), ("SQS_WORKER_RECEIVE_AHEAD", "-1")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("SQS_WORKER_RECEIVE_AHEAD"), "{e}");
    }

    #[test]
    fn rate_limit_and_adaptive_concurrency_come_from_the_environment() {
        let d = settings(&[]);
        assert_eq!((d.rate_limit, d.adaptive), (None, None));
        let s = settings(&[
            ("SQS_WORKER_RATE_LIMIT", "14.5"),
            ("SQS_WORKER_ADAPTIVE_CONCURRENCY", "true"),
            ("SQS_WORKER_CONCURRENCY", "48"),
        ]);
        assert_eq!(s.rate_limit, Some(RateLimit::per_second(14.5)));
        let a = s.adaptive.expect("adaptive concurrency");
        assert_eq!((a.min(), a.max(), s.concurrency), (1, 48, 48));
        assert_eq!(
            settings(&[("SQS_WORKER_ADAPTIVE_CONCURRENCY", "1")])
                .adaptive
                .map(|a| a.max()),
            Some(crate::config::DEFAULT_CONCURRENCY)
        );
        for (var, bad) in [
            ("SQS_WORKER_RATE_LIMIT", "0"),
            ("SQS_WORKER_RATE_LIMIT", "fast"),
            ("SQS_WORKER_RATE_LIMIT", "1e9"),
            ("SQS_WORKER_ADAPTIVE_CONCURRENCY", "maybe"),
        ] {
            let e =
                from_env_in(ok, &env(&[("SQS_QUEUE_URL", "http://x/q"), (var, bad)])).unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
    }

    #[test]
    fn the_old_visibility_variable_is_still_read() {
        let s = settings(&[("SQS_WORKER_VISIBILITY_TIMEOUT", "45")]);
        assert_eq!(s.visibility_timeout, Some(Duration::from_secs(45)));
        let s = settings(&[
            ("SQS_WORKER_VISIBILITY_TIMEOUT", "45"),
            ("SQS_WORKER_VISIBILITY_TIMEOUT_SECONDS", "60"),
        ]);
        assert_eq!(s.visibility_timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn the_default_grace_period_fits_the_platforms_default_stop_timeout() {
        // ECS's and Kubernetes' default stop timeout is 30 s.
        assert!(DEFAULT_GRACE_PERIOD + FLUSH_ALLOWANCE <= Duration::from_secs(30));
        assert_eq!(
            stop_timeout_warning(DEFAULT_GRACE_PERIOD, Some("30s")),
            None
        );
    }

    #[test]
    fn a_stop_timeout_not_above_the_grace_period_is_warned_about() {
        let grace = Duration::from_secs(30);
        for stop in ["30s", "30", "32s", "20s"] {
            let w = stop_timeout_warning(grace, Some(stop)).expect(stop);
            assert!(w.contains("ECS_CONTAINER_STOP_TIMEOUT"), "{w}");
            assert!(w.contains("SQS_WORKER_GRACE_SECONDS"), "{w}");
        }
        assert_eq!(stop_timeout_warning(grace, Some("2m")), None);
        assert_eq!(stop_timeout_warning(grace, None), None);
        assert_eq!(stop_timeout_warning(grace, Some("")), None);
        let w = stop_timeout_warning(grace, Some("soon")).unwrap();
        assert!(w.contains("not a duration"), "{w}");
    }

    #[test]
    fn a_queue_visibility_timeout_of_zero_is_refused_at_start_up() {
        let s = settings(&[]);
        let e = lease_timing(&s, Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("visibility_timeout"), "{e}");
        assert!(e.to_string().contains("0 s"), "{e}");
        let (v, h) = lease_timing(&s, Duration::from_secs(30)).unwrap();
        assert_eq!((v, h), (Duration::from_secs(30), Duration::from_secs(10)));
    }

    #[test]
    fn a_heartbeat_not_below_the_queues_visibility_timeout_is_refused_at_start_up() {
        let s = settings(&[("SQS_WORKER_HEARTBEAT_SECONDS", "30")]);
        let e = lease_timing(&s, Duration::from_secs(30)).unwrap_err();
        assert!(e.to_string().contains("heartbeat_interval"), "{e}");
        assert!(lease_timing(&s, Duration::from_secs(90)).is_ok());
    }

    #[test]
    fn a_processor_without_a_time_limit_is_warned_about() {
        let max = Duration::from_secs(60);
        let none = time_limit_warning(None, max).unwrap();
        assert!(none.contains("no handler time limit"), "{none}");
        assert!(time_limit_warning(Some(Duration::from_secs(61)), max).is_some());
        assert!(time_limit_warning(Some(max), max).is_none());
        // An engine has the limit of its config.
        use sqs_worker_core::EngineConfig;
        use sqs_worker_core::runner::Processor;
        let engine = Engine::with_config(ok, EngineConfig::default());
        assert_eq!(engine.time_limit(), None);
        let limited = EngineConfig::default().handler_timeout(Some(max));
        assert_eq!(Engine::with_config(ok, limited).time_limit(), Some(max));
    }
}
