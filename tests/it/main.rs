//! The integration tests: one binary, one module per topic, sharing the
//! helpers in `common` (moto's server, queues, proxies, pollers).
//!
//! Run one topic with `cargo test --all-features --test it poller::`.
//! `tests/observability.rs` and `tests/otel.rs` are separate binaries: each
//! sets process-global state (the metrics recorder and health; the message
//! span hook) that the tests here must not share.
#![allow(clippy::unwrap_used, missing_docs)] // tests may unwrap

mod common;

mod bad_input;
mod contract;
mod dead_letter;
#[cfg(feature = "telemetry")]
mod demo;
mod envelopes;
#[cfg(feature = "telemetry")]
mod examples;
mod faults;
mod fifo;
mod flow;
mod flow_limits;
mod idempotency;
mod lambda;
mod lambda_emulator;
#[cfg(feature = "telemetry")]
mod operations;
#[cfg(feature = "dynamodb")]
mod orders_example;
#[cfg(all(feature = "producer", feature = "large-payloads"))]
mod payload_env;
mod poller;
mod poller_faults;
#[cfg(all(
    feature = "producer",
    feature = "large-payloads",
    feature = "lambda-testing"
))]
mod producer;
mod proptests;
#[cfg(feature = "telemetry")]
mod security;
mod tenants;
