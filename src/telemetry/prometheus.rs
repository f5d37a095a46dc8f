//! A Prometheus `/metrics` endpoint and a `/healthz` check for the poller
//! (ECS container health checks, load balancers, Kubernetes probes).

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::BoxError;
use sqs_worker_core::config::{ConfigError, Env, var};
use sqs_worker_core::flow::CircuitState;
use sqs_worker_core::runner::observe::{HealthStatus, health};

/// How long every receive must have failed before `/healthz` says unhealthy,
/// unless `SQS_WORKER_UNHEALTHY_AFTER_SECONDS` says otherwise.
pub const DEFAULT_UNHEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A running metrics endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MetricsServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Installs a Prometheus recorder (when no recorder is installed yet) and
/// serves `GET /metrics` and `GET /healthz` on `addr`. `/healthz` answers 503
/// once every receive has failed for `unhealthy_after`.
pub async fn serve_metrics(
    addr: SocketAddr,
    unhealthy_after: Duration,
) -> Result<MetricsServer, BoxError> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let handle = match metrics::set_global_recorder(recorder) {
        Ok(()) => Some(handle),
        Err(_) => {
            tracing::warn!("a metrics recorder is already installed: /metrics will answer 404");
            None
        }
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let addr = listener.local_addr()?;
    let mut tasks = Vec::new();
    if let Some(h) = handle.clone() {
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _ = respond(stream, handle.as_ref(), unhealthy_after).await;
            });
        }
    }));
    tracing::info!(%addr, "serving /metrics and /healthz");
    Ok(MetricsServer { addr, tasks })
}

/// [`serve_metrics`] on `SQS_WORKER_METRICS_ADDR` (e.g. `0.0.0.0:9090`) when
/// it is set; `None` otherwise.
pub async fn serve_metrics_from_env() -> Result<Option<MetricsServer>, BoxError> {
    let env = Env::process();
    let Some(addr) = env.string(var::METRICS_ADDR) else {
        return Ok(None);
    };
    let addr: SocketAddr = addr.parse().map_err(|e| ConfigError::InvalidEnv {
        var: var::METRICS_ADDR,
        value: addr,
        reason: format!("expected an address like 0.0.0.0:9090 ({e})"),
    })?;
    let after = env
        .seconds(var::UNHEALTHY_AFTER_SECONDS)?
        .unwrap_or(DEFAULT_UNHEALTHY_AFTER);
    serve_metrics(addr, after).await.map(Some)
}

async fn respond(
    mut stream: TcpStream,
    handle: Option<&PrometheusHandle>,
    unhealthy_after: Duration,
) -> std::io::Result<()> {
    let mut buf = [0u8; 2048];
    let mut len = 0;
    // Read the request head (we only need the request line).
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = stream.read(&mut buf[len..]).await?;
            len += n;
            if n == 0 || buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => match handle {
            Some(h) => ("200 OK", "text/plain; version=0.0.4", h.render()),
            None => (
                "404 Not Found",
                "text/plain",
                "no Prometheus recorder\n".to_owned(),
            ),
        },
        ("GET", "/healthz") => match health().check(unhealthy_after) {
            // 200 while the circuit is open: the dependency is down, not the
            // worker; a restart would not help.
            HealthStatus::Healthy => match health().circuit() {
                CircuitState::Closed => ("200 OK", "text/plain", "ok\n".to_owned()),
                state => (
                    "200 OK",
                    "text/plain",
                    format!(
                        "circuit {}: a dependency looks down; receiving is paused\n",
                        state.as_str()
                    ),
                ),
            },
            // 200: the poller backs off and goes on; a restart would not help.
            HealthStatus::Degraded { limited_for } => (
                "200 OK",
                "text/plain",
                format!(
                    "degraded: SQS has refused receives for {}s (the queue's in-flight limit)\n",
                    limited_for.as_secs()
                ),
            ),
            HealthStatus::Unhealthy { failing_for } => (
                "503 Service Unavailable",
                "text/plain",
                format!(
                    "unhealthy: every SQS receive has failed for {}s\n",
                    failing_for.as_secs()
                ),
            ),
        },
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
