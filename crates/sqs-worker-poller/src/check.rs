//! The settings checks of [`PollerBuilder::build`](crate::PollerBuilder::build)
//! that need nothing but the settings: every value in range (durations at
//! most 12 h, so no clock arithmetic can overflow), none contradicting
//! another.

use std::time::Duration;

use sqs_worker_core::config::{ConfigError, check_duration};

use sqs_worker_core::MAX_VISIBILITY_TIMEOUT;

use crate::config::{DEFAULT_WAIT_TIME, Settings};

/// Checks the receive, visibility, timing and dead-letter settings.
pub(crate) fn settings(s: &Settings) -> Result<(), ConfigError> {
    let bad = |setting: &'static str, reason: String| Err(ConfigError::invalid(setting, reason));
    if s.wait_time > DEFAULT_WAIT_TIME || s.wait_time.subsec_nanos() != 0 {
        return bad(
            "wait_time",
            format!(
                "{:?} is not whole seconds from 0 to 20 (SQS's WaitTimeSeconds)",
                s.wait_time
            ),
        );
    }
    if !(1..=10).contains(&s.max_messages) {
        return bad(
            "max_messages",
            format!("{} is not between 1 and 10", s.max_messages),
        );
    }
    if let Some(v) = s.visibility_timeout
        && (v > MAX_VISIBILITY_TIMEOUT || v < Duration::from_secs(1))
    {
        return bad(
            "visibility_timeout",
            format!("{v:?} is not between 1 s and 12 h"),
        );
    }
    if let Some(h) = s.heartbeat_interval {
        check_duration("heartbeat_interval", h)?;
        if h < Duration::from_millis(100) {
            return bad("heartbeat_interval", format!("{h:?} is below 100 ms"));
        }
        if let Some(v) = s.visibility_timeout
            && h >= v
        {
            return bad(
                "heartbeat_interval",
                format!(
                    "{h:?} is not below the visibility timeout {v:?}: messages would reappear between heartbeats"
                ),
            );
        }
    }
    if s.max_processing_time.is_zero() || s.max_processing_time > MAX_VISIBILITY_TIMEOUT {
        return bad(
            "max_processing_time",
            format!("{:?} is not between 0 and 12 h", s.max_processing_time),
        );
    }
    check_duration("grace_period", s.grace_period)?;
    if let Some(idle) = s.idle_exit {
        check_duration("idle_exit", idle)?;
    }
    if s.flush_interval > Duration::from_secs(1) {
        return bad(
            "flush_interval",
            format!("{:?} is above 1 s", s.flush_interval),
        );
    }
    if let Some(d) = s.stats_interval {
        if d.is_zero() {
            return bad("stats_interval", "must be above 0".into());
        }
        check_duration("stats_interval", d)?;
    }
    if let Some(p) = &s.scale_in_protection {
        p.check()?;
    }
    crate::tenant::check(s)?;
    if s.receive_ahead > sqs_worker_core::config::MAX_CONCURRENCY {
        return bad(
            "receive_ahead",
            format!(
                "{} is above {}",
                s.receive_ahead,
                sqs_worker_core::config::MAX_CONCURRENCY
            ),
        );
    }
    if let Some(d) = &s.dead_letter_queue
        && d.trim().is_empty()
    {
        return bad("dead_letter_queue", "the URL is empty".into());
    }
    Ok(())
}
