#!/usr/bin/env bash
# Runs the scheduler benchmarks (benches/switch.rs, release) beside Go's
# anchor (../shared/anchors/run.sh switch) on this machine and prints each
# figure with its ratio ours/Go (below 1 means usurp is faster).
# Needs go (apt-get install -y golang-go).
set -euo pipefail
cd "$(dirname "$0")/.."
anchors="$(dirname "$0")/../../shared/anchors/run.sh"
command -v go >/dev/null || { echo "go is missing: apt-get install -y golang-go" >&2; exit 1; }

ours=$(cargo bench -q -p usurp --bench switch 2>/dev/null)
go=$(bash "$anchors" switch)
echo "== usurp (benches/switch.rs)"
echo "$ours"
echo "== Go ($(go version | awk '{print $3}'))"
echo "$go"

num() { grep -m1 "$1" | sed -E "s/.*$2: *([0-9.]+).*/\1/"; }
u_yield=$(echo "$ours" | num '^yield, 2 tasks, workers(1)' 'workers\(1\)')
u_ping=$(echo "$ours" | num '^channel ping-pong round trip, workers(1)' 'workers\(1\)')
u_spawn=$(echo "$ours" | num '^spawn+join, workers(1)' 'workers\(1\)')
u_yield_nocpu=$(echo "$ours" | num '^yield, 2 tasks, workers(1), task_cpu_time(false)' 'task_cpu_time\(false\)')
u_ping_nocpu=$(echo "$ours" | num '^channel ping-pong round trip, workers(1), task_cpu_time(false)' 'task_cpu_time\(false\)')
g_yield=$(echo "$go" | num '^Gosched' 'GOMAXPROCS=[0-9]+')
g_ping=$(echo "$go" | num '^channel ping-pong' 'round trip')
g_spawn=$(echo "$go" | num '^spawn+join' 'spawn\+join')

echo "== ratios (usurp / Go; goals: yield <= 20 ns, ping-pong <= 150 ns, spawn+join <= 200 ns)"
row() { awk -v n="$1" -v u="$2" -v g="$3" 'BEGIN { printf "%-32s usurp %8.1f ns   Go %8.1f ns   ratio %.2f\n", n, u, g, u / g }'; }
row "yield (Gosched)" "$u_yield" "$g_yield"
row "channel ping-pong round trip" "$u_ping" "$g_ping"
row "spawn+join" "$u_spawn" "$g_spawn"
row "yield, task_cpu_time(false)" "$u_yield_nocpu" "$g_yield"
row "ping-pong, task_cpu_time(false)" "$u_ping_nocpu" "$g_ping"

# ---- preemption (benches/preempt.rs) beside ../shared/anchors/run.sh preempt --------
# (appended by the integration work; goals from issue 3: wake p99 <= quantum +
# 100 us at 1 ms, <= 250 us at 100 us; throughput within 1% of async off)
echo
echo "== usurp preemption (benches/preempt.rs)"
cargo bench -q -p usurp --bench preempt 2>/dev/null
echo "== Go preemption anchor"
bash "$anchors" preempt

# ---- binary-trees (benches/binarytrees.rs) beside ../shared/anchors/run.sh binarytrees
# (issue 4 goals: wall <= 0.8x Go's, max RSS <= Go's)
depth=${BT_DEPTH:-21}
. ci/lib.sh
bt=$(bench_bin binarytrees)
echo
echo "== binary-trees $depth"
u=$( { /usr/bin/time -f "usurp binary-trees $depth: wall %e s, max RSS %M KB" "$bt" "$depth" >/dev/null; } 2>&1 | grep '^usurp binary-trees.*RSS')
g=$(bash "$anchors" binarytrees "$depth" 2>&1)
echo "$u"
echo "$g"
gw=$(echo "$g" | sed -nE 's/^go binary-trees.*wall ([0-9.]+) s.*/\1/p')
gr=$(echo "$g" | sed -nE 's/^go binary-trees.*RSS ([0-9]+) KB.*/\1/p')
uw=$(echo "$u" | sed -nE 's/.*wall ([0-9.]+) s.*/\1/p')
ur=$(echo "$u" | sed -nE 's/.*RSS ([0-9]+) KB.*/\1/p')
awk -v uw="$uw" -v gw="$gw" -v ur="$ur" -v gr="$gr" \
  'BEGIN { printf "binary-trees ratios usurp/Go: wall %.2f (goal <= 0.80), max RSS %.2f (goal <= 1.00)\n", uw / gw, ur / gr }'

# ---- work conservation (benches/conserve.rs; issue 11 goals: fork-join of two
# 500 ms halves <= 0.55 s; spawned sleeper >= 90% of Go's wake-ups, ~900 here)
echo
echo "== usurp work conservation (benches/conserve.rs)"
cargo bench -q -p usurp --bench conserve 2>/dev/null
