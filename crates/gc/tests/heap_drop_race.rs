//! A query of a heap's object from a thread that does not keep that heap
//! alive (`GcRef::is_live`, `GcRef::payload` on a plain thread: `Gc<T>` is
//! `Send`) racing the heap's final drop read its side tables while they
//! were unmapped: a segfault from safe code (a new-user program, two
//! threads, `is_live` in a loop against heaps built and dropped: 3 crashes
//! in 3 runs). Such reads now pin the heap's handle-check entry, and the
//! drop waits for the pins before the maps go (`refcheck::with_pinned`).
//!
//! Each scenario runs in a child process (this test binary, re-run on one
//! test), so that the negative control's segfault fails an assertion
//! instead of the whole test binary. The fault injection holds the reader
//! between its look-up and its reads until the test releases it, which it
//! does once the heap is unregistered (handshakes, not timing guesses: a
//! first version that slept 5 ms flaked at load 4-8, found by the review),
//! so the drop comes in between every time. Each child has a 60 s watchdog.
mod common;
use common::run_child;
use std::time::Duration;
use usurp_gc::{gc_type, Gc, Heap, HeapConfig, Member};

#[repr(C)]
struct Link {
    next: Member<Link>,
}
gc_type!(Link { next });

const CHILD: &str = "USURP_HEAP_DROP_RACE_CHILD";

/// The unpinned child's exit status when its reads, after the drop, gave a
/// wrong answer instead of a fault.
const WRONG_ANSWER: i32 = 42;

/// The scenario (in the child): a plain thread asks `is_live` and
/// `payload` of an object while the main thread drops its heap. Returns
/// with the answers checked; with the pin off, segfaults or exits with
/// [`WRONG_ANSWER`] (0 if the race did not show).
fn scenario(pinned: bool) {
    usurp_testsupport::child_watchdog(60, "child watchdog: the scenario hung (a drop waiting for a pin that is never released?)", 99);
    usurp_gc::internals::set_table_pin_for_tests(pinned, true);
    let h = Heap::new(HeapConfig { max_heap: 4 << 20, ..HeapConfig::default() }).unwrap();
    let x = {
        let _g = h.attach_thread().unwrap();
        Gc::new(Link { next: Member::null() })
    };
    use usurp_gc::internals::{live_heaps_for_tests, release_slow_readers_for_tests, slow_readers_for_tests};
    let readers0 = slow_readers_for_tests();
    let reader = std::thread::spawn(move || {
        // Looks the heap up (and pins it), waits in the injected delay
        // until released, then reads its tables.
        let live = x.raw().is_live();
        let payload = x.raw().payload() as usize;
        (live, payload)
    });
    // Once the reader is in its delay (past its look-up), the heap is
    // dropped on another thread (with the pin, that drop waits for the
    // reader); the reader is released once the heap is unregistered (its
    // maps go right after, unless a pin holds them), whichever thread ran
    // its final drop.
    while slow_readers_for_tests() == readers0 {
        std::thread::yield_now();
    }
    let dropper = std::thread::spawn(move || drop(h));
    while live_heaps_for_tests().0 != 0 {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(5));
    release_slow_readers_for_tests();
    let (live, payload) = reader.join().unwrap();
    dropper.join().unwrap();
    if !pinned {
        // The control: the reads came after the unmapping. They fault, or
        // (the range mapped again by something else meanwhile) they answer
        // from memory that is no longer the heap's: a wrong answer.
        let wrong = !live || payload != x.raw().addr() + 8;
        std::process::exit(if wrong { WRONG_ANSWER } else { 0 });
    }
    // The heap was registered at the look-up: with the pin, the drop waited
    // for the reads, which saw the object (live, its payload after the
    // 8-byte header).
    assert!(live, "is_live: the object was live when looked up");
    assert_eq!(payload, x.raw().addr() + 8);
    // After the drop nothing is live there, and nothing is read.
    usurp_gc::internals::set_table_pin_for_tests(pinned, false);
    assert!(!x.raw().is_live(), "is_live after the heap was dropped");
}

#[test]
fn queries_racing_a_heap_drop_are_pinned() {
    match std::env::var(CHILD).as_deref() {
        Ok("pinned") => scenario(true),
        Ok(_) => {}
        Err(_) => {
            let o = run_child("queries_racing_a_heap_drop_are_pinned", CHILD, "pinned");
            assert!(o.status.success(), "the pinned scenario failed: {:?}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
        }
    }
}

/// The negative control: without the pin, the same scenario reads the
/// unmapped tables: the child dies of SIGSEGV, or, if the range was mapped
/// again meanwhile (seen once at load 4), its answers are wrong.
#[test]
fn without_the_pin_the_race_segfaults() {
    match std::env::var(CHILD).as_deref() {
        Ok("unpinned") => scenario(false),
        Ok(_) => {}
        Err(_) => {
            use std::os::unix::process::ExitStatusExt;
            let o = run_child("without_the_pin_the_race_segfaults", CHILD, "unpinned");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.signal() == Some(libc::SIGSEGV)
                    || err.contains("Segmentation fault")
                    || o.status.code() == Some(WRONG_ANSWER),
                "without the pin the child should crash or answer wrongly: {:?}\n{err}",
                o.status
            );
        }
    }
}
