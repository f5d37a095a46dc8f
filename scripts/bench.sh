#!/usr/bin/env bash
# The benchmark suite in one command (see BENCHMARKS.md): builds the bench
# binary, starts moto's SQS server on loopback, runs every workload (drain,
# idle memory, head-of-line, visibility extension) with the framework and its
# baselines alternating in the same run, prints the tables, then runs the
# in-process Lambda adapter and engine micro-benchmarks.
#
#   bash scripts/bench.sh                       # everything
#   bash scripts/bench.sh --only drain --rounds 3 --drain-n 3000
#   SQS_WORKER_BENCH_ENDPOINT=http://127.0.0.1:5000 bash scripts/bench.sh
#   SQS_WORKER_BENCH_SKIP_MICRO=1 bash scripts/bench.sh   # no cargo bench
#   SQS_WORKER_BENCH_SKIP_PRODUCE=1 bash scripts/bench.sh # no producer throughput
#
# Every option after the script name goes to `sqs-worker-bench suite`
# (`target/release/sqs-worker-bench` without arguments lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

cargo build --release -p sqs-worker-bench
# The Lambda cold start runs the `orders` example against a fake Runtime API.
cargo build --release --example orders || echo "orders example not built: Lambda cold start skipped" >&2
# A private copy: the shared target/ may be rebuilt while the suite runs.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp target/release/sqs-worker-bench target/release/plain-lambda "$WORK/"
BIN="$WORK/sqs-worker-bench"

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), \
$(free -g | awk '/^Mem:/ {print $2 " GiB"}'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# moto $(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || echo '?'), $(rustc --version)"

ENDPOINT="${SQS_WORKER_BENCH_ENDPOINT:-}"
if [ -z "$ENDPOINT" ]; then
  # moto exits when this script does (its stdin is our coprocess pipe).
  coproc MOTO { exec python3 scripts/moto_server.py --exit-on-stdin-eof; }
  read -r ENDPOINT <&"${MOTO[0]}"
fi

"$BIN" suite --endpoint "$ENDPOINT" --orders target/release/examples/orders "$@"

# Producer throughput (Sender::send_batch against a plain SendMessageBatch
# loop, alternating), on the in-memory fake (10,000 messages) and on moto
# (2,000: moto accepts tens to hundreds of messages per second).
if [ -z "${SQS_WORKER_BENCH_SKIP_PRODUCE:-}" ]; then
  "$BIN" produce --endpoint "$ENDPOINT" --servers fake,moto --n 10000 --moto-n 2000 --rounds 3
fi

if [ -z "${SQS_WORKER_BENCH_SKIP_MICRO:-}" ]; then
  echo
  echo "## Lambda adapter, in process: cargo bench -p sqs-worker-lambda --features testing --bench lambda"
  cargo bench -p sqs-worker-lambda --features testing --bench lambda 2>/dev/null
  echo
  echo "## engine, in process: cargo bench -p sqs-worker-core --bench engine"
  cargo bench -p sqs-worker-core --bench engine 2>/dev/null
fi
