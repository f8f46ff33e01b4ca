#!/usr/bin/env bash
# Issue 9's sleeper goal beside Go, from one session: a 1 ms sleeper task
# beside a binary-trees churn (depth-20 long-lived tree, depth-18 trees built
# and dropped), 2 workers / GOMAXPROCS=2; prints each one's sleep lateness
# p50 / p99 / max. Usage: bash ci/sleeper_churn.sh [seconds] [--preemptible].
# Needs golang-go (apt-get install -y golang-go). BENCH_BIN=path runs that
# sleeper_churn bench binary instead of building this tree's (see ci/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
. ci/lib.sh
go=$(go_anchor benches/go/sleeper_churn go-sleeper-churn)
bench=$(bench_bin sleeper_churn)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" "$secs" "$@"
"$go" "$secs"
