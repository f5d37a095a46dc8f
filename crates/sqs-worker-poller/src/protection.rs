//! ECS task scale-in protection: while this process has messages in flight,
//! or had work recently, its task is marked protected through the ECS
//! agent's endpoint (`$ECS_AGENT_URI/task-protection/v1/state`), so service
//! auto scaling stops idle tasks instead of busy ones.
//!
//! - Calls only on a change of state, plus a renewal before the protection
//!   expires (the expiry is what frees the task of a crashed worker).
//! - An agent that errors or does not answer is logged and retried with a
//!   backoff; processing never waits for it.
//! - The agent endpoint is plain HTTP on a link-local address: one HTTP/1.1
//!   `PUT` over a TCP stream per call, no HTTP client.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::inflight::InFlight;
use crate::stats::Activity;
use crate::stop::stopped;

/// The default [`ScaleInProtection::expiry`]: 10 minutes.
pub const DEFAULT_PROTECTION_EXPIRY: Duration = Duration::from_secs(10 * 60);
/// The default [`ScaleInProtection::idle_after`]: 30 seconds.
pub const DEFAULT_PROTECTION_IDLE: Duration = Duration::from_secs(30);

/// The longest protection the agent accepts: 2,880 minutes.
const MAX_EXPIRY: Duration = Duration::from_secs(2880 * 60);
/// The longest one agent call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest agent answer read.
const MAX_ANSWER: u64 = 64 * 1024;

/// ECS task scale-in protection settings for the poller
/// ([`PollerBuilder::scale_in_protection`](crate::PollerBuilder::scale_in_protection);
/// [`Poller::from_env`](crate::Poller::from_env) turns it on when
/// `ECS_AGENT_URI` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleInProtection {
    pub(crate) agent_uri: String,
    pub(crate) expiry: Duration,
    pub(crate) idle_after: Duration,
}

impl ScaleInProtection {
    /// Protection through the ECS agent at `agent_uri` (the value of
    /// `ECS_AGENT_URI`, `http://host[:port]/path`).
    pub fn new(agent_uri: impl Into<String>) -> Self {
        Self {
            agent_uri: agent_uri.into(),
            expiry: DEFAULT_PROTECTION_EXPIRY,
            idle_after: DEFAULT_PROTECTION_IDLE,
        }
    }

    /// How long each protection lasts unless renewed (sent as whole minutes,
    /// rounded up, 1 to 2,880): a worker that dies protected is freed this
    /// long after its last call. Renewed at four fifths of it while busy.
    /// Default 10 minutes.
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// The task is unprotected once nothing was in flight and nothing
    /// received or settled for this long. Default 30 s.
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = idle;
        self
    }

    /// Checks the settings (the builder's `build` calls it).
    pub(crate) fn check(&self) -> Result<(), sqs_worker_core::config::ConfigError> {
        use sqs_worker_core::config::{ConfigError, check_duration};
        AgentUri::parse(&self.agent_uri)
            .map_err(|reason| ConfigError::invalid("scale_in_protection", reason))?;
        if self.expiry.is_zero() || self.expiry > MAX_EXPIRY {
            return Err(ConfigError::invalid(
                "scale_in_protection",
                format!("expiry {:?} is not between 1 minute and 48 h", self.expiry),
            ));
        }
        check_duration("scale_in_protection", self.idle_after)
    }

    /// The expiry in whole minutes, as the agent takes it.
    fn expiry_minutes(&self) -> u64 {
        self.expiry.as_secs().div_ceil(60).clamp(1, 2880)
    }
}

/// When to call the agent: state changes, renewals before expiry, and a
/// backoff after failures. Pure: the caller passes the time.
#[derive(Debug)]
pub(crate) struct Protector {
    /// The state the agent last accepted; `None` before the first call.
    current: Option<bool>,
    /// When the agent last accepted a protection.
    set_at: Instant,
    /// No call before this, after a failure.
    retry_at: Option<Instant>,
    failures: u32,
    renew_after: Duration,
}

impl Protector {
    pub(crate) fn new(expiry: Duration, now: Instant) -> Self {
        Self {
            current: None,
            set_at: now,
            retry_at: None,
            failures: 0,
            renew_after: expiry.mul_f64(0.8),
        }
    }

    /// The state to send now, if any, for a worker that is `busy` or not.
    /// The first call is sent only when busy (a task starts unprotected).
    pub(crate) fn next_call(&self, now: Instant, busy: bool) -> Option<bool> {
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        match self.current {
            None => busy.then_some(true),
            Some(c) if c != busy => Some(busy),
            Some(true) if now >= self.set_at + self.renew_after => Some(true),
            Some(_) => None,
        }
    }

    /// The agent accepted `state`.
    pub(crate) fn accepted(&mut self, now: Instant, state: bool) {
        self.current = Some(state);
        self.set_at = now;
        self.retry_at = None;
        self.failures = 0;
    }

    /// A call failed: back off (1 s, doubling, at most a minute). Returns the
    /// failures in a row.
    pub(crate) fn failed(&mut self, now: Instant) -> u32 {
        self.failures = self.failures.saturating_add(1);
        let backoff = Duration::from_secs(1 << self.failures.min(7).saturating_sub(1));
        self.retry_at = Some(now + backoff.min(Duration::from_secs(60)));
        self.failures
    }
}

/// Follows the load until `stop`, telling the agent as the state changes.
pub(crate) async fn protect(
    settings: ScaleInProtection,
    inflight: Arc<InFlight>,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) {
    let agent = match AgentUri::parse(&settings.agent_uri) {
        Ok(a) => a,
        Err(reason) => {
            tracing::warn!(%reason, "scale-in protection off: bad agent URI");
            return;
        }
    };
    let tick = (settings.idle_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut protector = Protector::new(settings.expiry, Instant::now());
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(tick) => {}
        }
        let busy = inflight.len() > 0
            || activity
                .last_activity_age()
                .is_some_and(|age| age < settings.idle_after);
        let now = Instant::now();
        let Some(state) = protector.next_call(now, busy) else {
            continue;
        };
        match agent.put(state, settings.expiry_minutes()).await {
            Ok(()) => {
                tracing::debug!(protected = state, "task scale-in protection set");
                protector.accepted(now, state);
            }
            Err(error) => {
                let failures = protector.failed(Instant::now());
                // The first failure of a run, then every tenth: not a line per tick.
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(
                        %error,
                        failures,
                        protected = state,
                        "the ECS agent did not set task scale-in protection: retrying \
                         (processing goes on)"
                    );
                }
            }
        }
    }
}

/// `ECS_AGENT_URI`, split for a plain HTTP/1.1 request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AgentUri {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: String,
    /// The request path of the protection state.
    path: String,
}

impl AgentUri {
    fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("http://")
            .ok_or_else(|| format!("{uri:?} is not an http:// URI"))?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return Err(format!("{uri:?} has no host"));
        }
        let addr = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let path = path.trim_end_matches('/');
        Ok(Self {
            addr,
            host: host.to_owned(),
            path: if path.is_empty() {
                "/task-protection/v1/state".to_owned()
            } else {
                format!("/{path}/task-protection/v1/state")
            },
        })
    }

    /// `PUT {"ProtectionEnabled": state, "ExpiresInMinutes": minutes}`; an
    /// error unless the agent answers 2xx without a `failure` or `error`.
    async fn put(&self, state: bool, minutes: u64) -> Result<(), AgentError> {
        tokio::time::timeout(CALL_TIMEOUT, self.put_now(state, minutes))
            .await
            .map_err(|_| AgentError::Timeout)?
    }

    async fn put_now(&self, state: bool, minutes: u64) -> Result<(), AgentError> {
        let body = if state {
            format!(r#"{{"ProtectionEnabled":true,"ExpiresInMinutes":{minutes}}}"#)
        } else {
            r#"{"ProtectionEnabled":false}"#.to_owned()
        };
        let request = format!(
            "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(&self.addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or(AgentError::Malformed)?;
        if !(200..300).contains(&status) {
            return Err(AgentError::Status(status, excerpt(body)));
        }
        match serde_json::from_str::<serde_json::Value>(body) {
            Ok(v) if v.get("failure").is_some() || v.get("error").is_some() => {
                Err(AgentError::Refused(excerpt(body)))
            }
            _ => Ok(()),
        }
    }
}

/// The start of an agent answer, for a log line.
fn excerpt(body: &str) -> String {
    body.chars().take(200).collect()
}

/// Why an agent call failed.
#[derive(Debug, thiserror::Error)]
enum AgentError {
    #[error("the agent could not be reached")]
    Io(#[from] std::io::Error),
    #[error("the agent did not answer within {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("the agent's answer is not HTTP")]
    Malformed,
    #[error("the agent answered {0}: {1}")]
    Status(u16, String),
    #[error("the agent refused: {0}")]
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_uris_split_into_address_host_and_path() {
        let a = AgentUri::parse("http://169.254.170.2/api/0123abcd-task").unwrap();
        assert_eq!(a.addr, "169.254.170.2:80");
        assert_eq!(a.host, "169.254.170.2");
        assert_eq!(a.path, "/api/0123abcd-task/task-protection/v1/state");
        let a = AgentUri::parse("http://127.0.0.1:5123/").unwrap();
        assert_eq!(a.addr, "127.0.0.1:5123");
        assert_eq!(a.path, "/task-protection/v1/state");
        assert!(AgentUri::parse("https://x/api").is_err());
        assert!(AgentUri::parse("http:///api").is_err());
    }

    #[test]
    fn expiry_is_sent_in_whole_minutes_within_the_agents_range() {
        let p = ScaleInProtection::new("http://127.0.0.1/");
        assert_eq!(p.expiry_minutes(), 10);
        assert_eq!(
            p.clone().expiry(Duration::from_secs(61)).expiry_minutes(),
            2
        );
        assert!(p.clone().expiry(Duration::ZERO).check().is_err());
        assert!(
            p.clone()
                .expiry(MAX_EXPIRY + Duration::from_secs(1))
                .check()
                .is_err()
        );
        assert!(ScaleInProtection::new("ftp://x").check().is_err());
        assert!(p.check().is_ok());
    }

    #[test]
    fn calls_follow_state_changes_and_renewals_only() {
        let t0 = Instant::now();
        let expiry = Duration::from_secs(600);
        let mut p = Protector::new(expiry, t0);
        // Idle at start: nothing to say (a task starts unprotected).
        assert_eq!(p.next_call(t0, false), None);
        assert_eq!(p.next_call(t0, true), Some(true));
        p.accepted(t0, true);
        // Busy for a while: no call per tick, one renewal before expiry.
        let mut calls = 0;
        let mut now = t0;
        while now < t0 + expiry * 2 {
            now += Duration::from_secs(1);
            if let Some(state) = p.next_call(now, true) {
                assert!(state);
                calls += 1;
                p.accepted(now, state);
            }
        }
        assert_eq!(calls, 2, "a renewal at 4/5 of each expiry");
        assert_eq!(p.next_call(now, false), Some(false));
        p.accepted(now, false);
        assert_eq!(p.next_call(now + expiry * 3, false), None);
    }

    #[test]
    fn failures_back_off_and_retry() {
        let t0 = Instant::now();
        let mut p = Protector::new(Duration::from_secs(600), t0);
        assert_eq!(p.failed(t0), 1);
        assert_eq!(p.next_call(t0 + Duration::from_millis(500), true), None);
        assert_eq!(p.next_call(t0 + Duration::from_secs(1), true), Some(true));
        for _ in 0..20 {
            p.failed(t0);
        }
        assert_eq!(p.next_call(t0 + Duration::from_secs(59), true), None);
        assert_eq!(p.next_call(t0 + Duration::from_secs(60), true), Some(true));
    }
}
