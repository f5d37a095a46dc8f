//! The engine settings and retry budget from the environment (moved out of
//! `runner.rs`, which keeps the runner's own variables).

use std::sync::Arc;
use std::time::Duration;

use sqs_worker_core::EngineConfig;
use sqs_worker_core::config::{ConfigError, Env, var};
use sqs_worker_core::flow::{DEFAULT_RETRY_WINDOW, RetryBudget};

use crate::runner::MAX_SAFETY_MARGIN;

/// The engine settings from the environment: `SQS_WORKER_CONCURRENCY`,
/// handlers running at once (default 16); `SQS_WORKER_START_MARGIN_SECONDS`
/// ([`EngineConfig::start_margin`], default 0);
/// `SQS_WORKER_FIFO_STOP_BATCH_ON_FAILURE`
/// ([`EngineConfig::fifo_stop_batch_on_failure`], default off); and the
/// retry budget (`SQS_WORKER_RETRY_WINDOW_SECONDS`,
/// `SQS_WORKER_MAX_RECEIVE_COUNT`).
pub fn engine_config_from_env() -> Result<EngineConfig, ConfigError> {
    engine_config_in(&Env::process())
}

pub(crate) fn engine_config_in<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<EngineConfig, ConfigError> {
    Ok(engine_config_and_budget(env)?.0)
}

/// The engine settings and the retry budget they use (shared, so the
/// service can tell it the queue's `maxReceiveCount` at the cold start).
pub(crate) fn engine_config_and_budget<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<(EngineConfig, Arc<RetryBudget>), ConfigError> {
    let mut config = EngineConfig::default();
    if let Some(n) = env.count(var::CONCURRENCY)? {
        config = config.concurrency(n);
    }
    if let Some(margin) = env.seconds(var::START_MARGIN_SECONDS)? {
        check_margin(var::START_MARGIN_SECONDS, margin)?;
        config = config.start_margin(margin);
    }
    if let Some(on) = env.flag(var::FIFO_STOP_BATCH_ON_FAILURE)? {
        config = config.fifo_stop_batch_on_failure(on);
    }
    let budget = Arc::new(retry_budget_in(env)?);
    Ok((config.retry_policy_arc(budget.clone()), budget))
}

/// A margin from the environment is at most [`MAX_SAFETY_MARGIN`] (Lambda's
/// longest function timeout).
fn check_margin(var: &'static str, margin: Duration) -> Result<(), ConfigError> {
    if margin > MAX_SAFETY_MARGIN {
        return Err(ConfigError::InvalidEnv {
            var,
            value: margin.as_secs_f64().to_string(),
            reason: "expected at most 900 seconds, Lambda's longest function timeout".into(),
        });
    }
    Ok(())
}

/// The retry budget from `SQS_WORKER_RETRY_WINDOW_SECONDS` (default 1 hour)
/// and `SQS_WORKER_MAX_RECEIVE_COUNT` (the queue's `maxReceiveCount`; without
/// it the budget is the plain exponential backoff).
fn retry_budget_in<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<RetryBudget, ConfigError> {
    let window = env
        .seconds(var::RETRY_WINDOW_SECONDS)?
        .unwrap_or(DEFAULT_RETRY_WINDOW);
    if window.is_zero() {
        return Err(ConfigError::InvalidEnv {
            var: var::RETRY_WINDOW_SECONDS,
            value: "0".into(),
            reason: "expected a window above 0 seconds".into(),
        });
    }
    let budget = RetryBudget::new(window);
    let Some(n) = env.count(var::MAX_RECEIVE_COUNT)? else {
        return Ok(budget);
    };
    let n = u32::try_from(n)
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| ConfigError::InvalidEnv {
            var: var::MAX_RECEIVE_COUNT,
            value: n.to_string(),
            reason: "SQS's maxReceiveCount is 1 to 1000".into(),
        })?;
    let budget = budget.with_max_receive_count(n);
    if !budget.fits() {
        tracing::warn!(
            max_receive_count = n,
            retry_window_s = window.as_secs_f64(),
            "the retry window is too long for maxReceiveCount (a retry delay would pass \
             SQS's 12-hour limit): failing messages reach the DLQ sooner"
        );
    }
    Ok(budget)
}

#[cfg(test)]
mod tests {

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_pairs(pairs)
    }

    #[test]
    fn concurrency_from_the_environment_is_checked_and_named() {
        for bad in ["0", "many", "1000000"] {
            let e = engine_config_in(&env(&[("SQS_WORKER_CONCURRENCY", bad)])).unwrap_err();
            assert!(e.to_string().contains("SQS_WORKER_CONCURRENCY"), "{e}");
        }
        assert!(engine_config_in(&env(&[("SQS_WORKER_CONCURRENCY", "4")])).is_ok());
    }

    #[test]
    fn the_retry_budget_reads_its_window_and_count_from_the_environment() {
        let b = retry_budget_in(&env(&[])).unwrap();
        assert_eq!(b.window(), DEFAULT_RETRY_WINDOW);
        assert_eq!(b.max_receive_count(), None);
        let b = retry_budget_in(&env(&[
            ("SQS_WORKER_RETRY_WINDOW_SECONDS", "300"),
            ("SQS_WORKER_MAX_RECEIVE_COUNT", "5"),
        ]))
        .unwrap();
        assert_eq!(b.window(), Duration::from_secs(300));
        assert_eq!(b.max_receive_count(), Some(5));
        for (var, bad) in [
            ("SQS_WORKER_RETRY_WINDOW_SECONDS", "0"),
            ("SQS_WORKER_RETRY_WINDOW_SECONDS", "1h"),
            ("SQS_WORKER_MAX_RECEIVE_COUNT", "1001"),
            ("SQS_WORKER_MAX_RECEIVE_COUNT", "five"),
        ] {
            let e = retry_budget_in(&env(&[(var, bad)])).unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
    }

    /// Issue 15 §6: the start margin and the FIFO stop-at-first-failure
    /// switch are engine settings read from the environment in Lambda.
    #[test]
    fn the_start_margin_and_fifo_stop_switch_come_from_the_environment() {
        let config = engine_config_in(&env(&[])).unwrap();
        let text = format!("{config:?}");
        assert!(text.contains("start_margin: 0ns"), "{text}");
        assert!(text.contains("fifo_stop_batch_on_failure: false"), "{text}");
        let config = engine_config_in(&env(&[
            ("SQS_WORKER_START_MARGIN_SECONDS", "1.5"),
            ("SQS_WORKER_FIFO_STOP_BATCH_ON_FAILURE", "true"),
        ]))
        .unwrap();
        let text = format!("{config:?}");
        assert!(text.contains("start_margin: 1.5s"), "{text}");
        assert!(text.contains("fifo_stop_batch_on_failure: true"), "{text}");
        for (var, bad) in [
            ("SQS_WORKER_START_MARGIN_SECONDS", "901"),
            ("SQS_WORKER_START_MARGIN_SECONDS", "1s"),
            ("SQS_WORKER_FIFO_STOP_BATCH_ON_FAILURE", "sometimes"),
        ] {
            let e = engine_config_in(&env(&[(var, bad)])).unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
    }
}
