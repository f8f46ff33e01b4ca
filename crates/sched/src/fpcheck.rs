//! Start-up check that the build has frame pointers (issue 13 item 9).
//!
//! Task dumps, debugger backtraces through a preemption and profilers walk
//! the frame-pointer chain of a preempted task; it is exact only if the code
//! was built with `-C force-frame-pointers=yes -C
//! llvm-args=-enable-shrink-wrap=false`. usurp's `.cargo/config.toml` sets
//! them for its own workspace, but Cargo does not read a dependency's
//! configuration, and a `RUSTFLAGS` variable replaces it: an embedder's
//! build easily lacks them. Rust flags apply to every crate of a build, so
//! the prologue of one `preemptible!` function compiled here ([`probe`],
//! with an early exit that shrink-wrapping would hoist above the prologue)
//! tells how the embedder's own preemptible code was built. The first
//! runtime built checks it once and warns on stderr (registers and GC roots
//! do not depend on the chain); without frame records, pinning of preempted
//! tasks cannot find their preemptible callers and falls back to the whole
//! section's answer (`preempt_glue::must_pin`). The byte patterns are the
//! arch crate's (`prologue_links_frame`).

usurp_preempt::preemptible! {
    /// Never called: only its machine code is read. Non-leaf, with an early
    /// exit, so that a build without frame pointers or with shrink-wrapping
    /// shows in its first instructions.
    fn probe(v: &[u64]) -> u64 {
        if v.is_empty() {
            return 0;
        }
        let mut s = 0;
        for &x in v {
            s ^= probe_callee(x);
        }
        s
    }
}

#[inline(never)]
fn probe_callee(x: u64) -> u64 {
    std::hint::black_box(x).rotate_left(7)
}

/// Whether the `preemptible!` probe starts by linking a frame record.
pub(crate) fn build_has_frame_pointers() -> bool {
    let f: fn(&[u64]) -> u64 = probe;
    // SAFETY: reads the first 24 bytes of a function's code (mapped
    // readable and executable; the function is longer than that).
    let code = unsafe { std::slice::from_raw_parts(f as usize as *const u8, 24) };
    crate::arch::prologue_links_frame(code)
}

/// Prints one warning if frame pointers are missing. Called once per
/// process, when the first runtime installs its hooks.
pub(crate) fn warn_without_frame_pointers() {
    if let Some(w) = warning(build_has_frame_pointers(), usurp_preempt::build_flags_warned()) {
        eprintln!("{w}");
    }
}

/// The warning, if any: none where the probe's prologue links a frame
/// record, and none where `usurp_preempt` already warned at start-up about
/// the same flags read from the build (a build without them would
/// otherwise print two warnings for one cause). The probe still speaks
/// where the flag check missed (flags that reach the code some other way).
fn warning(probe_has_frame_pointers: bool, flags_warned: bool) -> Option<&'static str> {
    (!probe_has_frame_pointers && !flags_warned).then_some(
        "usurp: warning: this program was built without frame pointers (or with shrink-wrapping): \
         task dumps and backtraces of preempted tasks may miss frames. Build with \
         RUSTFLAGS=\"-C force-frame-pointers=yes -C llvm-args=-enable-shrink-wrap=false\" or the same \
         [build] rustflags in your .cargo/config.toml (usurp's own does not apply to your build; a \
         RUSTFLAGS variable replaces it). See usurp::embedding.",
    )
}

#[cfg(test)]
mod tests {
    /// This workspace builds with the flags (`.cargo/config.toml`): the
    /// probe must pass. Run with `RUSTFLAGS=` (no frame pointers) this test
    /// fails, which is the check working (the arch crates' unit tests cover
    /// the refused prologues byte by byte).
    #[test]
    fn the_workspace_build_has_frame_pointers() {
        assert!(super::build_has_frame_pointers(), "preemptible probe without a frame-pointer prologue");
    }

    /// One cause, one warning: the probe's warning only where the
    /// start-up flag check (`usurp_preempt`) said nothing.
    #[test]
    fn a_build_without_the_flags_is_warned_about_once() {
        assert!(super::warning(false, false).is_some_and(|w| w.contains("force-frame-pointers")));
        assert_eq!(super::warning(false, true), None, "the flag check already warned");
        assert_eq!(super::warning(true, false), None);
        assert_eq!(super::warning(true, true), None);
        // This workspace builds with the flags: neither check warns.
        assert!(!usurp_preempt::build_flags_warned());
    }
}
