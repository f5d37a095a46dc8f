#!/usr/bin/env bash
# README command 1: the one-command demo on a fresh machine.
#
# Sets up what is missing (scripts/setup.sh), starts a local SQS server (moto,
# on loopback, a free port), builds the `orders` example and the demo driver,
# then runs the demo driver (crates/sqs-worker-tools/src/bin/sqs-worker-demo.rs): it creates a queue and a dead-letter queue with a
# redrive policy, starts the orders worker as its own process, produces a few
# thousand orders while the worker drains them, shows live progress, sends one
# poison message, stops the worker with SIGTERM and prints a summary. Then
# it shows what an operator would run: `sqs-worker stats` on the queue and
# `sqs-worker dlq inspect` on its dead-letter queue (crates/sqs-worker-cli).
#
# The driver must print its queues on lines starting `queue ` and
# `dead-letter ` (the URL as the second word); the CLI commands run against
# the same local server.
#
# Environment: DEMO_ORDERS (default 3000), ORDERS_FAIL_EVERY (default 40),
# SQS_WORKER_DEMO_ENDPOINT to use a server that is already running.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

bash scripts/setup.sh

echo "building the orders example, the demo driver and the sqs-worker command..."
cargo build --quiet --example orders
cargo build --quiet -p sqs-worker-tools --bin sqs-worker-demo
cargo build --quiet -p sqs-worker-cli --bin sqs-worker
target_dir="${CARGO_TARGET_DIR:-target}"

tmp="$(mktemp -d)"
cleanup() {
    # Closing our end of the server's stdin stops it (--exit-on-stdin-eof).
    if [[ -n "${moto_fd:-}" ]]; then exec {moto_fd}>&-; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

if [[ -z "${SQS_WORKER_DEMO_ENDPOINT:-}" ]]; then
    exec {moto_fd}> >(exec python3 scripts/moto_server.py --exit-on-stdin-eof >"$tmp/url" 2>"$tmp/server.log")
    for _ in $(seq 1 600); do
        [[ -s "$tmp/url" ]] && break
        sleep 0.1
    done
    if [[ ! -s "$tmp/url" ]]; then
        echo "the local SQS server did not start; its log:" >&2
        cat "$tmp/server.log" >&2 || true
        exit 1
    fi
    SQS_WORKER_DEMO_ENDPOINT="$(head -n1 "$tmp/url")"
    echo "local SQS server at $SQS_WORKER_DEMO_ENDPOINT (moto)"
fi

export SQS_WORKER_DEMO_ENDPOINT SQS_WORKER_DEMO_WORKER="$target_dir/debug/examples/orders"
demo="$target_dir/debug/sqs-worker-demo"
# The driver's output is kept to find its queues; on a terminal it runs under
# `script` so that it still sees one and shows its progress in place.
if [[ -t 1 ]] && command -v script >/dev/null; then
    script -qefc "$(printf '%q' "$demo")" /dev/null | tee "$tmp/demo.out"
else
    "$demo" | tee "$tmp/demo.out"
fi

queue="$(tr -d '\r' <"$tmp/demo.out" | awk '$1 == "queue" { print $2; exit }')"
dlq="$(tr -d '\r' <"$tmp/demo.out" | awk '$1 == "dead-letter" { print $2; exit }')"
if [[ -z "$queue" || -z "$dlq" ]]; then
    echo "the demo driver did not print its queues (lines 'queue URL' and 'dead-letter URL')" >&2
    exit 1
fi
# The command line, configured like the worker: the local server, dummy credentials.
cli() {
    env -u AWS_PROFILE AWS_ENDPOINT_URL="$SQS_WORKER_DEMO_ENDPOINT" AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo \
        "$target_dir/debug/sqs-worker" "$@"
}
echo
echo "\$ sqs-worker stats $queue"
cli stats "$queue"
echo
echo "\$ sqs-worker dlq inspect $dlq"
cli dlq inspect "$dlq"
