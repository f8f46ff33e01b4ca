//! Compile-time proof that the test hooks are not part of a normal build.
//!
//! A doctest cannot show it: doctests are built with the dev-dependencies,
//! which turn the `test-hooks` feature on. So `ci/test.sh` checks this crate
//! twice, as a user's crate would be built (normal dependencies only):
//! with `--features probe` the calls below must fail to compile, one error
//! naming each hook; with `--features probe,test-hooks` they must compile.
//! Without `probe` (every other build of the workspace) the crate is empty.

/// One hook of each kind and path a user could reach: a free function of
/// each member crate's hidden module, the facade's re-exported `sync`
/// module, and a hidden method of the facade's `Heap`.
#[cfg(feature = "probe")]
pub fn call_hooks(heap: &usurp::gc::Heap) {
    usurp_gc::internals::set_barrier_shading_for_tests(true);
    usurp_gc::set_shading_gate_for_tests(true);
    usurp_sched::hooks::set_pin_policy_for_tests(None);
    usurp_preempt::internals::fake_shadow_stack_for_tests(false);
    usurp::sync::set_wait_claim_for_tests(true);
    heap.debug_begin_marking();
}

/// The hooks added after the feature was introduced, each by its path (one
/// error each without the feature), so that `ci/test.sh` names every one.
#[cfg(feature = "probe")]
pub fn call_later_hooks(heap: &usurp::gc::Heap) -> usize {
    usurp_gc::internals::set_release_background_for_tests(true);
    usurp_gc::internals::set_sweeper_stall_for_tests(0);
    usurp_gc::internals::set_collector_placement_for_tests(true);
    usurp_gc::internals::set_rust_type_read_check_for_tests(true);
    usurp_gc::internals::set_root_heap_check_for_tests(true);
    usurp_gc::internals::set_root_liveness_check_for_tests(true);
    usurp_sched::hooks::set_release_on_drop_for_tests(true);
    usurp_sched::hooks::set_packet_cache_for_tests(true);
    usurp_sched::hooks::set_spin_nap_for_tests(true);
    usurp_sched::hooks::set_spin_nap_sole_for_tests(true);
    usurp::sync::set_shutdown_skip_for_tests(true);
    usurp_sched::hooks::set_abandoned_owner_disconnects_for_tests(true);
    usurp_sched::hooks::set_nap_ns_for_tests(0);
    usurp_sched::hooks::set_stop_wakes_nappers_for_tests(true);
    usurp_sched::hooks::set_stopper_respin_for_tests(true);
    usurp_sched::hooks::set_timer_wakes_napper_for_tests(true);
    usurp_gc::internals::set_heap_quarantine_for_tests(true);
    usurp_gc::internals::set_exited_thread_check_for_tests(true);
    usurp_sched::hooks::set_lone_spin_for_tests(true);
    usurp_sched::hooks::set_timer_spin_duty_for_tests(true);
    usurp_sched::hooks::set_timer_spin_backoff_for_tests(true);
    usurp_sched::hooks::set_timer_spin_fake_loss_for_tests(false);
    usurp_sched::hooks::set_stand_aside_for_tests(true);
    usurp_sched::hooks::set_stand_aside_cpus_for_tests(0);
    usurp_sched::hooks::set_stand_aside_callbacks_for_tests(true);
    usurp_sched::hooks::set_stand_aside_stop_protocol_for_tests(true);
    usurp_sched::hooks::set_stand_aside_keeps_boosted_for_tests(true);
    usurp_sched::hooks::set_stand_aside_respects_pins_for_tests(true);
    usurp_sched::hooks::set_timers_at_checkpoint_for_tests(true);
    usurp_sched::hooks::set_stack_pool_budget_for_tests(None);
    usurp_sched::hooks::set_cooperative_slots_for_tests(true);
    usurp_gc::internals::set_root_table_in_stop_for_tests(false);
    usurp_gc::internals::set_rooted_vec_deletion_shading_for_tests(true);
    usurp_sched::hooks::set_recv_shading_for_tests(true);
    usurp_sched::hooks::set_closures_with_stacks_for_tests(true);
    usurp_sched::hooks::set_runtime_roots_in_stop_for_tests(false);
    heap.set_attach_pause_for_tests(None);
    heap.debug_background_refs()
        + heap.debug_weak_slots()
        + heap.debug_rooted_vecs()
        + usurp_sched::hooks::runtime_roots_in_stops_for_tests()
        + usurp_sched::hooks::packet_cache_hits_for_tests()
        + usurp_sched::hooks::spin_naps_for_tests()
        + usurp_sched::hooks::take_max_concurrent_naps_for_tests()
        + usurp_sched::hooks::idle_wake_calls_for_tests()
        + usurp_sched::hooks::lone_spins_for_tests()
        + usurp_sched::hooks::timer_spin_backoffs_for_tests()
        + usurp_sched::hooks::timer_spin_waits_for_tests()
        + usurp_sched::hooks::timer_spin_ns_for_tests() as usize
        + stand_aside_counts()
        + usurp_gc::internals::collector_placements_for_tests() as usize
        + usurp_gc::internals::root_table_scans_in_stops_for_tests() as usize
}

/// `stand_aside_for_tests` and `stand_aside_counts_for_tests` need a
/// runtime (one error each without the feature).
#[cfg(feature = "probe")]
fn stand_aside_counts() -> usize {
    let rt = usurp::Runtime::new().unwrap();
    usurp_sched::hooks::stand_aside_for_tests(&rt, false);
    usurp_sched::hooks::stand_aside_counts_for_tests(&rt).0 as usize + usurp_sched::hooks::stack_pool_for_tests(&rt).0
}
