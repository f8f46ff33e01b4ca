# Shared by the benchmark scripts beside Go (ci/gc_stops.sh, ci/listwalk.sh,
# ci/sleeper_churn.sh, ci/bench.sh): sourced, not run. Each function prints
# a path on stdout; build output goes to stderr only when a build fails.

# go_anchor DIR NAME: builds the Go program in DIR (relative to the repository
# root) into $ANCHOR_OUT (default /tmp/usurp-anchors) as NAME; prints its path.
go_anchor() {
  command -v go >/dev/null || { echo "go is missing: apt-get install -y golang-go" >&2; return 1; }
  local out=${ANCHOR_OUT:-/tmp/usurp-anchors}
  mkdir -p "$out"
  (cd "$1" && go build -o "$out/$2" .) >&2
  echo "$out/$2"
}

# bench_bin NAME: builds benches/NAME.rs (release) and prints its binary's
# path, or prints $BENCH_BIN when set (a binary built from another commit, to
# run beside Go in the same minutes). Honours CARGO_TARGET_DIR.
bench_bin() {
  if [ -n "${BENCH_BIN:-}" ]; then
    echo "$BENCH_BIN"
    return
  fi
  local log
  log=$(cargo build --release --bench "$1" 2>&1) || { echo "$log" >&2; return 1; }
  ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/"$1"-* | grep -v '\.d$' | head -1
}
