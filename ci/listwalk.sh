#!/usr/bin/env bash
# Safe Gc<T> dereferences on a pointer chase beside Go (benches/listwalk.rs,
# benches/go/listwalk): ns per cell of a linked-list sum, usurp's checked
# derefs and get_unchecked, Go's plain loads; alternated `runs` times (default
# 5). Usage: bash ci/listwalk.sh [runs] [cells] [rounds].
# Needs golang-go (apt-get install -y golang-go).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
out=${ANCHOR_OUT:-/tmp/usurp-anchors}
mkdir -p "$out"
(cd benches/go/listwalk && go build -o "$out/go-listwalk" .)
cargo build --release --bench listwalk >/dev/null 2>&1
bench=$(ls -t target/release/deps/listwalk-* | grep -v '\.d$' | head -1)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$runs"); do
  "$bench" "$@" 2>/dev/null
  "$out/go-listwalk" "$@"
done
