//! Detects whether the build has the code-generation flags usurp relies on
//! (frame pointers, shrink-wrapping off; see `src/rustflags.rs`) and sets
//! `usurp_no_frame_pointers` / `usurp_shrink_wrap` for the ones missing, so
//! that the runtime can warn once at start-up. A `RUSTFLAGS` variable
//! replaces `.cargo/config.toml`'s flags without a word; this makes it say so.

#[path = "src/rustflags.rs"]
#[allow(dead_code, unexpected_cfgs)]
mod rustflags;

fn main() {
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo::rustc-check-cfg=cfg(usurp_no_frame_pointers)");
    println!("cargo::rustc-check-cfg=cfg(usurp_shrink_wrap)");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    // For the unit test that checks the cfgs against the flags.
    println!("cargo::rustc-env=USURP_BUILD_RUSTFLAGS={}", flags.replace('\x1f', "\\x1f"));
    let c = rustflags::check(&flags);
    if !c.frame_pointers {
        println!("cargo::rustc-cfg=usurp_no_frame_pointers");
    }
    if !c.no_shrink_wrap {
        println!("cargo::rustc-cfg=usurp_shrink_wrap");
    }
}
