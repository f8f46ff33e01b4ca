#!/usr/bin/env bash
# Runs every usurp test: the native (x86-64) suite, then the aarch64 suite
# cross-built and run under qemu-aarch64 user-mode emulation.
#
# Run as root on a fresh Debian machine, it installs what it needs first
# (the aarch64 cross linker and libc, qemu-user-static, the rustup target).
# USURP_SKIP_AARCH64=1 skips the emulated suite (for a quick local loop).
set -euo pipefail
cd "$(dirname "$0")/.."

# gdb: crates/preempt/tests/gdb_backtrace.rs checks that a debugger's
# backtrace walks through a preemption (natively with gdb, under qemu with
# qemu's gdbstub and gdb-multiarch); without them that test only skips.
need_apt=()
want_apt=()
command -v gdb >/dev/null || want_apt+=(gdb)
if [ -z "${USURP_SKIP_AARCH64:-}" ]; then
  command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
  command -v qemu-aarch64-static >/dev/null || need_apt+=(qemu-user-static)
  command -v gdb-multiarch >/dev/null || want_apt+=(gdb-multiarch)
fi
if [ "$(id -u)" = 0 ] && [ "$((${#need_apt[@]} + ${#want_apt[@]}))" -gt 0 ]; then
  echo "== installing ${need_apt[*]} ${want_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" "${want_apt[@]}" >/dev/null
elif [ "${#need_apt[@]}" -gt 0 ] || [ "${#want_apt[@]}" -gt 0 ]; then
  if [ "${#need_apt[@]}" -eq 0 ]; then
    echo "note: ${want_apt[*]} not installed: the debugger backtrace test will skip" >&2
  else
    echo "missing ${need_apt[*]}: run as root, or install them (apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi
if [ -z "${USURP_SKIP_AARCH64:-}" ] && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  echo "== rustup target add aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu
fi

if ! cargo clippy --version >/dev/null 2>&1; then
  echo "== rustup component add clippy"
  rustup component add clippy
fi

host=$(rustc -vV | sed -n 's/^host: //p')
# Lints first (cheap, no run): the workspace lints in Cargo.toml
# ([workspace.lints]: unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks,
# clippy::missing_safety_doc) and clippy's defaults, as errors, for both ISAs.
echo "== clippy ($host)"
cargo clippy --workspace --all-targets -- -D warnings
if [ -z "${USURP_SKIP_AARCH64:-}" ]; then
  echo "== clippy (aarch64-unknown-linux-gnu)"
  cargo clippy --workspace --all-targets --target aarch64-unknown-linux-gnu -- -D warnings
fi
# The test hooks (negative controls that break the runtime's guarantees)
# exist only with the `test-hooks` feature, which the test targets get from
# their dev-dependencies. Build the libraries as a user's program gets them:
# no warning (e.g. code only a hook used), no `test-hooks` in the stress
# binary's build, and a crate calling one hook per crate and path
# (ci/hooks-probe) fails to compile, one error per hook, while the same
# calls compile with the feature (the control: the failure is the gate's).
echo "== no test hooks without the test-hooks feature"
cargo clippy --workspace --lib -- -D warnings
if cargo tree -e features -p usurp-stress | grep -q test-hooks; then
  echo "usurp-stress is built with the test-hooks feature" >&2
  exit 1
fi
if probe=$(cargo clippy -q -p usurp-hooks-probe --features probe 2>&1); then
  echo "ci/hooks-probe compiled without the test-hooks feature: a hook is exposed" >&2
  exit 1
fi
hooks=(set_stopper_respin_for_tests set_barrier_shading_for_tests set_shading_gate_for_tests set_pin_policy_for_tests
  fake_shadow_stack_for_tests set_wait_claim_for_tests debug_begin_marking
  set_release_background_for_tests set_sweeper_stall_for_tests set_rust_type_read_check_for_tests
  set_root_heap_check_for_tests set_root_liveness_check_for_tests set_release_on_drop_for_tests
  set_packet_cache_for_tests set_spin_nap_for_tests set_spin_nap_sole_for_tests set_shutdown_skip_for_tests
  debug_background_refs packet_cache_hits_for_tests spin_naps_for_tests take_max_concurrent_naps_for_tests
  idle_wake_calls_for_tests set_abandoned_owner_disconnects_for_tests set_nap_ns_for_tests
  set_stop_wakes_nappers_for_tests set_timer_wakes_napper_for_tests set_lone_spin_for_tests lone_spins_for_tests
  set_timer_spin_duty_for_tests timer_spin_ns_for_tests set_attach_pause_for_tests set_heap_quarantine_for_tests
  set_timer_spin_backoff_for_tests set_timer_spin_fake_loss_for_tests timer_spin_backoffs_for_tests timer_spin_waits_for_tests
  set_exited_thread_check_for_tests set_stand_aside_for_tests set_stand_aside_cpus_for_tests
  set_stand_aside_callbacks_for_tests set_stand_aside_stop_protocol_for_tests stand_aside_for_tests
  stand_aside_counts_for_tests set_collector_placement_for_tests set_stand_aside_keeps_boosted_for_tests
  collector_placements_for_tests set_stand_aside_respects_pins_for_tests
  set_timers_at_checkpoint_for_tests set_stack_pool_budget_for_tests stack_pool_for_tests
  set_cooperative_slots_for_tests debug_weak_slots set_root_table_in_stop_for_tests
  root_table_scans_in_stops_for_tests set_rooted_vec_deletion_shading_for_tests debug_rooted_vecs
  set_recv_shading_for_tests set_runtime_roots_in_stop_for_tests runtime_roots_in_stops_for_tests
  set_closures_with_stacks_for_tests)
for hook in "${hooks[@]}"; do
  if ! grep -q "^error\[E0\(425\|599\)\]: .*\`$hook\`" <<<"$probe"; then
    echo "$probe" >&2
    echo "ci/hooks-probe: no 'cannot find' error for $hook" >&2
    exit 1
  fi
done
if [ "$(grep -c '^error\[' <<<"$probe")" != "${#hooks[@]}" ]; then
  echo "$probe" >&2
  echo "ci/hooks-probe: expected exactly ${#hooks[@]} errors" >&2
  exit 1
fi
cargo clippy -q -p usurp-hooks-probe --features probe,test-hooks -- -D warnings
# Every intra-doc link resolves (the facade's API map links every item).
echo "== docs"
RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links" cargo doc --workspace --no-deps
echo "== native suite ($host)"
cargo test --workspace --release

if [ -z "${USURP_SKIP_AARCH64:-}" ]; then
  echo "== aarch64 suite under qemu-aarch64"
  # Emulation is slow; the stress-heavy tests read USURP_TEST_SCALE to shrink.
  USURP_TEST_SCALE=${USURP_TEST_SCALE:-0.25} \
    cargo test --workspace --release --target aarch64-unknown-linux-gnu
fi
echo "== all suites passed"
