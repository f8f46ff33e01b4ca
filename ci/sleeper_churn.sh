#!/usr/bin/env bash
# Issue 9's sleeper goal beside Go, from one session: a 1 ms sleeper task
# beside a binary-trees churn (depth-20 long-lived tree, depth-18 trees built
# and dropped), 2 workers / GOMAXPROCS=2; prints each one's sleep lateness
# p50 / p99 / max. Usage: bash ci/sleeper_churn.sh [seconds] [--preemptible].
# Needs golang-go (apt-get install -y golang-go).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
out=${ANCHOR_OUT:-/tmp/usurp-anchors}
mkdir -p "$out"
(cd benches/go/sleeper_churn && go build -o "$out/go-sleeper-churn" .)
cargo build --release --bench sleeper_churn >/dev/null 2>&1
bench=$(ls -t target/release/deps/sleeper_churn-* | grep -v '\.d$' | head -1)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" "$secs" "$@"
"$out/go-sleeper-churn" "$secs"
