#!/usr/bin/env bash
# Safe Gc<T> dereferences on a pointer chase beside Go (benches/listwalk.rs,
# benches/go/listwalk): ns per cell of a linked-list sum, usurp's checked
# derefs and get_unchecked, Go's plain loads; alternated `runs` times (default
# 5). Usage: bash ci/listwalk.sh [runs] [cells] [rounds].
# Needs golang-go (apt-get install -y golang-go). BENCH_BIN=path runs that
# listwalk bench binary instead of building this tree's (see ci/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
. ci/lib.sh
go=$(go_anchor benches/go/listwalk go-listwalk)
bench=$(bench_bin listwalk)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$runs"); do
  "$bench" "$@" 2>/dev/null
  "$go" "$@"
done
