#!/usr/bin/env bash
# Measures the write path on both profiles with release builds. Prints
# numbers; asserts nothing. Usage: bash bench/run.sh [post|decay|all]
# Needs MariaDB on 127.0.0.1:3306 and Redis on 127.0.0.1:6379 for the
# distributed run; uses a private database and key prefix, removed after.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
MESSAGES=${MESSAGES:-20000}
CLIENTS=${CLIENTS:-32}

cargo build --release -q -p chat -p chat-bench
CHAT=./target/release/chat
BENCH=./target/release/chat-bench
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS chat_bench" 2>/dev/null || true
  redis-cli --scan --pattern 'bench:*' | xargs -r -n 1000 redis-cli del >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_ready() {
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on port $1 never became ready" >&2
  return 1
}

if [ "$what" = post ] || [ "$what" = all ]; then
  echo "== embedded profile (one process: SQLite + in-database queue)"
  DATA_DIR=$work/embedded PORT=3101 RUST_LOG=warn $CHAT serve & pids+=($!)
  wait_ready 3101
  $BENCH --base http://127.0.0.1:3101 post --messages "$MESSAGES" --clients "$CLIENTS"

  echo "== distributed profile (chat api + chat worker, MariaDB + Redis)"
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS chat_bench; CREATE DATABASE chat_bench CHARACTER SET utf8mb4"
  export DATABASE_URL=mysql://root@127.0.0.1:3306/chat_bench REDIS_URL=redis://127.0.0.1:6379 REDIS_PREFIX=bench:
  $CHAT migrate >/dev/null 2>&1
  PORT=3102 RUST_LOG=warn $CHAT api & pids+=($!)
  PORT=3103 RUST_LOG=warn $CHAT worker & pids+=($!)
  wait_ready 3102
  $BENCH --base http://127.0.0.1:3102 post --messages "$MESSAGES" --clients "$CLIENTS"
  unset DATABASE_URL REDIS_URL REDIS_PREFIX
fi

if [ "$what" = decay ] || [ "$what" = all ]; then
  echo "== embedded profile, ${DECAY_MESSAGES:-200000} messages: persist rate per tenth"
  DATA_DIR=$work/decay PORT=3104 RUST_LOG=warn $CHAT serve & pids+=($!)
  wait_ready 3104
  $BENCH --base http://127.0.0.1:3104 decay --messages "${DECAY_MESSAGES:-200000}" --clients "$CLIENTS" \
    --database-url "sqlite://$work/decay/chat.db?mode=ro"
fi
