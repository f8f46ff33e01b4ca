//! Which of the code-generation flags usurp relies on a build was made with.
//!
//! The repository's `.cargo/config.toml` sets `-C force-frame-pointers=yes`
//! and `-C llvm-args=-enable-shrink-wrap=false`, but a `RUSTFLAGS` variable
//! silently replaces those flags, and an embedder's own build never sees
//! them. Without frame pointers the safe-point check and task backtraces
//! walk a broken frame-pointer chain; with shrink-wrapping a backtrace taken
//! at an early-exit path misses one frame. The build script (`build.rs`,
//! which includes this file) reads `CARGO_ENCODED_RUSTFLAGS` — the flags
//! cargo passes to every crate of the build, this one included — and sets a
//! cfg for each missing flag; `crate::signal::init` prints one warning on
//! stderr at start-up (see [`warning`]).

/// What the build's flags say (the last setting of each flag wins, as in rustc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagCheck {
    /// `-C force-frame-pointers=yes` (or `y`, `on`, `true`) is in effect.
    pub frame_pointers: bool,
    /// `-C llvm-args=-enable-shrink-wrap=false` is in effect.
    pub no_shrink_wrap: bool,
}

/// Checks `CARGO_ENCODED_RUSTFLAGS` (arguments separated by 0x1f). Used by
/// the build script and the tests.
#[cfg_attr(not(test), allow(dead_code))]
pub fn check(encoded: &str) -> FlagCheck {
    let mut r = FlagCheck { frame_pointers: false, no_shrink_wrap: false };
    let mut args = encoded.split('\x1f').filter(|a| !a.is_empty());
    while let Some(a) = args.next() {
        let codegen = if a == "-C" || a == "--codegen" {
            match args.next() {
                Some(v) => v,
                None => break,
            }
        } else if let Some(v) = a.strip_prefix("-C").or_else(|| a.strip_prefix("--codegen=")) {
            v
        } else {
            continue;
        };
        if let Some(v) = codegen.strip_prefix("force-frame-pointers") {
            // `-C force-frame-pointers` alone means yes.
            r.frame_pointers = matches!(v, "" | "=yes" | "=y" | "=on" | "=true");
        } else if let Some(v) = codegen.strip_prefix("llvm-args=") {
            for l in v.split_whitespace() {
                if let Some(s) = l.strip_prefix("-enable-shrink-wrap=") {
                    r.no_shrink_wrap = matches!(s, "false" | "0");
                }
            }
        }
    }
    r
}

/// The start-up warning for this build's missing flags (`None` when the
/// build has both), from the cfgs the build script set.
pub fn warning() -> Option<&'static str> {
    let frame_pointers = !cfg!(usurp_no_frame_pointers);
    let no_shrink_wrap = !cfg!(usurp_shrink_wrap);
    message(FlagCheck { frame_pointers, no_shrink_wrap })
}

fn message(c: FlagCheck) -> Option<&'static str> {
    match (c.frame_pointers, c.no_shrink_wrap) {
        (true, true) => None,
        (false, _) => Some(
            "usurp: warning: built without `-C force-frame-pointers=yes` (a RUSTFLAGS variable replaces \
             .cargo/config.toml's flags): the frame-pointer chain that the safe-point check and task \
             backtraces rely on is broken. Build with RUSTFLAGS=\"-C force-frame-pointers=yes -C \
             llvm-args=-enable-shrink-wrap=false\" or the same [build] rustflags in your \
             .cargo/config.toml (usurp's own does not apply to your build). See usurp::embedding.",
        ),
        (true, false) => Some(
            "usurp: warning: built without `-C llvm-args=-enable-shrink-wrap=false` (a RUSTFLAGS variable \
             replaces .cargo/config.toml's flags): a task backtrace taken at an early-exit path may miss a \
             frame. Build with RUSTFLAGS=\"-C force-frame-pointers=yes -C \
             llvm-args=-enable-shrink-wrap=false\" or the same [build] rustflags in your \
             .cargo/config.toml (usurp's own does not apply to your build). See usurp::embedding.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(args: &[&str]) -> String {
        args.join("\x1f")
    }

    #[test]
    fn the_repository_flags_pass() {
        let c = check(&enc(&["-C", "force-frame-pointers=yes", "-C", "llvm-args=-enable-shrink-wrap=false"]));
        assert_eq!(c, FlagCheck { frame_pointers: true, no_shrink_wrap: true });
        assert_eq!(message(c), None);
        let joined = check(&enc(&["-Cforce-frame-pointers=on", "--codegen=llvm-args=-x -enable-shrink-wrap=false"]));
        assert_eq!(joined, FlagCheck { frame_pointers: true, no_shrink_wrap: true });
    }

    #[test]
    fn a_replacing_rustflags_is_reported() {
        // What `RUSTFLAGS="-C target-cpu=native"` leaves: neither flag.
        let c = check(&enc(&["-C", "target-cpu=native"]));
        assert_eq!(c, FlagCheck { frame_pointers: false, no_shrink_wrap: false });
        assert!(message(c).is_some_and(|m| m.contains("force-frame-pointers")));
        assert_eq!(check(""), c);
        // The last setting wins.
        let off = check(&enc(&["-C", "force-frame-pointers=yes", "-C", "force-frame-pointers=no"]));
        assert!(!off.frame_pointers);
        let shrink = check(&enc(&["-C", "force-frame-pointers", "-C", "llvm-args=-enable-shrink-wrap=true"]));
        assert_eq!(shrink, FlagCheck { frame_pointers: true, no_shrink_wrap: false });
        assert!(message(shrink).is_some_and(|m| m.contains("shrink-wrap")));
    }

    #[test]
    fn this_build_matches_its_flags() {
        // The cfgs the build script set agree with the flags this test was
        // built with (CI builds with .cargo/config.toml's flags: no warning).
        // (The build script passes them with 0x1f spelled `\x1f`.)
        let flags = env!("USURP_BUILD_RUSTFLAGS").replace("\\x1f", "\x1f");
        assert_eq!(warning(), message(check(&flags)));
    }
}
