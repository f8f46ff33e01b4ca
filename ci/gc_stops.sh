#!/usr/bin/env bash
# GC stops of binary-trees beside Go's, from one session: runs
# benches/binarytrees.rs with USURP_DEBUG=gctrace=1 and the Go anchor with
# GODEBUG=gctrace=1, and prints each one's stop count, p50 / p99 / max (every
# stop apart: usurp's start and termination stops, Go's two STW phases), wall
# time, user and system CPU, max RSS and GC cycle count. Usage:
# bash ci/gc_stops.sh [depth] [extra args for the usurp bench, e.g. --preemptible].
# Needs golang-go (apt-get install -y golang-go).
# BENCH_BIN=path runs that binary-trees bench binary instead of building
# this tree's (a baseline built from another commit, in the same minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
depth=${1:-21}
shift || true
. ci/lib.sh
go=$(go_anchor ../shared/anchors/go/binarytrees go-binarytrees)
bench=$(bench_bin binarytrees)
stats() { # reads one stop in ms per line
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "no stops"; exit }
    i50 = int(NR * 0.50 + 0.5); if (i50 < 1) i50 = 1
    i99 = int(NR * 0.99 + 0.5); if (i99 < 1) i99 = 1; if (i99 > NR) i99 = NR
    printf "%d stops, p50 %.3f / p99 %.3f / max %.3f ms\n", NR, v[i50], v[i99], v[NR] }'
}
# CPU time the hypervisor took from this VM's CPUs during a run (the
# "steal" column of /proc/stat, in ms over all CPUs; 0 on bare metal): a
# stop's time-to-safepoint includes it when it falls on a worker that must
# answer the stop, so the tails are read beside it.
steal_ms() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%d\n", $9 * 1000 / hz }' /proc/stat; }
t=$(mktemp -d)
s0=$(steal_ms)
/usr/bin/time -f "wall %e s, user %U s, sys %S s, max RSS %M KB" -o "$t/usurp.time" env USURP_DEBUG=gctrace=1 "$bench" "$depth" "$@" >/dev/null 2>"$t/usurp.trace"
s1=$(steal_ms)
/usr/bin/time -f "wall %e s, user %U s, sys %S s, max RSS %M KB" -o "$t/go.time" env GODEBUG=gctrace=1 "$go" "$depth" >/dev/null 2>"$t/go.trace"
s2=$(steal_ms)
echo "usurp binary-trees $depth $*: $(cat "$t/usurp.time"), $(grep -c '^gc ' "$t/usurp.trace") cycles, host steal $((s1 - s0)) ms, load $(cut -d' ' -f1 /proc/loadavg)"
echo -n "  stops: "
sed -n 's/.*, stops start \([0-9.]*\) + termination \([0-9. +]*\) ms.*/\1 \2/p' "$t/usurp.trace" | tr -s ' +' '\n\n' | grep . | stats
echo -n "  time-to-safepoint per cycle (all its stops): "
sed -n 's/.*(ttsp \([0-9.]*\) + .*/\1/p' "$t/usurp.trace" | stats | sed 's/stops/cycles/'
echo "go binary-trees $depth: $(cat "$t/go.time"), $(grep -c '^gc ' "$t/go.trace") cycles, host steal $((s2 - s1)) ms"
echo -n "  stops: "
sed -n 's/^gc [0-9]* @[^:]*: \([0-9.]*\)+[0-9.]*+\([0-9.]*\) ms clock.*/\1\n\2/p' "$t/go.trace" | stats
rm -rf "$t"
