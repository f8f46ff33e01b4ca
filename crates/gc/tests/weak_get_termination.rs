//! A thread the World does not stop (here a plain thread; in the runtime
//! also a task inside `blocking`) reads a `WeakRef` while the collector is
//! in the termination stop, after its last drain of what the mutators
//! shaded (found by an independent review of the concurrent marking).
//!
//! Before the fix, `WeakRef::get` shaded the target W there: W's mark bit
//! was set and W pushed on the grey list after the drain; the weak-clearing
//! loop then saw W marked and kept the weak reference, and the end of the
//! mark threw the grey push away, so W's child C was never marked and was
//! freed: a weak reference handing out an object with a freed field.
//!
//! The fix (`refcheck::shading_section`): such threads shade inside a gate
//! that the collector closes for the stops in which it marks; a reader that
//! finds it closed waits for the stop's end and reads the weak reference
//! again. Sound outcomes: W and C both freed and the weak reference cleared
//! (the read waited), or W and C both kept (the read came before the last
//! drain). Negative control: with the gate switched off
//! (`set_shading_gate_for_tests(false)`), the defect shows (W kept, C freed).
//!
//! The window: a `HookWorld` flags the termination stop (the 2nd stop of a
//! cycle, verifier off) and many weak references to a rooted object,
//! registered before W's, make the weak-clearing loop long; the reader waits
//! for the flag, spins 300 µs (past the short drain) and reads.
//!
//! The same with a reader attached to *another* heap (`Reader::OtherHeap`):
//! a mutator vouches only for its own heap, so with two heaps alive its
//! reads of this heap's weak references go through the gate too. Without
//! that (any thread with a mutator bypassed the gate), 4 runs of 4 kept W
//! and freed C (found by the review of the heap-identity change).

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp_testsupport::scale as test_scale;
use usurp_testsupport::{serial, within};
use usurp_gc::{set_shading_gate_for_tests, Heap, HeapConfig, WeakRef};

const X: usize = 0x5a5a_5a5a;

struct HookWorld {
    stops: AtomicUsize,
    /// Set by the termination stop (2nd stop of the cycle).
    term: Arc<AtomicBool>,
    /// Set by the restart that follows the termination stop.
    restarted: Arc<AtomicBool>,
}

// SAFETY: no thread of this test is a mutator during the collection (the
// objects are built on a thread that has exited, the reader is a plain
// thread, the collector runs on its own thread): there is nothing to stop,
// scan or run in parallel.
unsafe impl usurp_gc::World for HookWorld {
    fn stop_the_world(&self) {
        let n = self.stops.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 2 {
            self.term.store(true, Ordering::SeqCst);
        }
    }
    fn start_the_world(&self) {
        if self.term.load(Ordering::SeqCst) {
            self.restarted.store(true, Ordering::SeqCst);
        }
    }
    fn for_each_conservative_range(&self, _f: &mut dyn FnMut(usize, usize)) {}
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Outcome {
    /// The reader began its read inside the termination stop.
    read_in_stop: bool,
    /// The reader got W.
    got_w: bool,
    w_live: bool,
    c_live: bool,
    weak_kept: bool,
}

/// Who reads the weak reference during the termination stop.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reader {
    /// Nobody (the control).
    None,
    /// A plain thread (not attached, never stopped).
    Plain,
    /// A thread attached to another heap: a mutator, but not one this
    /// heap's World stops.
    OtherHeap,
}

fn scenario(who: Reader) -> Outcome {
    let term = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let world = Arc::new(HookWorld { stops: AtomicUsize::new(0), term: term.clone(), restarted: restarted.clone() });
    let cfg = HeapConfig { verify: false, ..config(256 << 20) };
    let h = Heap::with_world(cfg, world).unwrap();
    h.set_background_sweeping(false);
    let fillers_n = test_scale(1_000_000);
    let (fillers, weak_w, wx, cx) = on_other_thread(&h, move |h| {
        let d = node(0, None, None);
        std::mem::forget(h.add_root(Some(d.raw())));
        let fillers: Vec<WeakRef> = (0..fillers_n).map(|_| h.weak(d.raw())).collect();
        let c = node(2, None, None);
        let w = node(1, Some(c), None);
        let weak_w = h.weak(w.raw());
        (fillers, weak_w, w.raw().addr() ^ X, c.raw().addr() ^ X)
    });
    let weak_w = Arc::new(weak_w);
    let got = Arc::new(AtomicUsize::new(0));
    let in_stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (term, restarted, weak_w, got, in_stop) =
            (term.clone(), restarted.clone(), weak_w.clone(), got.clone(), in_stop.clone());
        // A thread this heap's World never stops that only reads the weak
        // reference.
        std::thread::spawn(move || {
            if who == Reader::None {
                return;
            }
            let other = (who == Reader::OtherHeap)
                .then(|| Heap::new(HeapConfig { max_heap: 16 << 20, ..HeapConfig::default() }).unwrap());
            let _attached = other.as_ref().map(|b| b.attach_thread().unwrap());
            let deadline = Instant::now() + Duration::from_secs(30);
            while !term.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "the termination stop never came");
                std::hint::spin_loop();
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(300) {
                std::hint::spin_loop();
            }
            in_stop.store(!restarted.load(Ordering::SeqCst), Ordering::SeqCst);
            got.store(weak_w.get().map_or(0, |r| r.addr() ^ X), Ordering::SeqCst);
        })
    };
    collect_elsewhere(&h);
    reader.join().unwrap();
    h.finish_sweep();
    let (w, c) = (std::hint::black_box(wx) ^ X, std::hint::black_box(cx) ^ X);
    let got_w = got.load(Ordering::SeqCst) ^ X == w;
    let o = Outcome {
        read_in_stop: in_stop.load(Ordering::SeqCst),
        got_w,
        w_live: h.object_at(w).is_some(),
        c_live: h.object_at(c).is_some(),
        weak_kept: weak_w.get().is_some(),
    };
    eprintln!("{who:?}: {o:?}");
    drop(fillers);
    o
}

#[test]
fn weak_get_from_a_thread_outside_the_world_during_termination_never_keeps_a_target_without_its_children() {
    readers_never_keep_a_target_without_its_children(Reader::Plain);
}

#[test]
fn weak_get_from_a_thread_of_another_heap_during_termination_never_keeps_a_target_without_its_children() {
    readers_never_keep_a_target_without_its_children(Reader::OtherHeap);
}

fn readers_never_keep_a_target_without_its_children(reader: Reader) {
    // The tests flip a process-wide switch: one at a time.
    let _s = serial();
    within(300, "the scenario", move || {
        // Control: nobody reads: W and C are garbage, the weak ref cleared.
        let o = scenario(Reader::None);
        assert_eq!((o.w_live, o.c_live, o.weak_kept), (false, false, false), "{o:?}");
        let mut in_stop = 0;
        for attempt in 0..6 {
            let o = scenario(reader);
            assert!(!o.w_live || o.c_live, "attempt {attempt}: W kept while its child C was freed: {o:?}");
            assert_eq!(o.weak_kept, o.w_live, "attempt {attempt}: weak ref kept iff W lives: {o:?}");
            if o.got_w {
                assert!(o.w_live && o.c_live, "attempt {attempt}: the reader got W, which was then freed: {o:?}");
            }
            if o.read_in_stop {
                in_stop += 1;
                // The termination (no one else references W) decides W is
                // garbage; a read inside its stop waits for the stop's end
                // and finds the weak reference cleared.
                assert!(!o.got_w && !o.w_live, "attempt {attempt}: a read inside the stop got W: {o:?}");
            }
        }
        assert!(in_stop > 0, "the reader never read inside the termination stop: inconclusive");
    });
}

#[test]
fn negative_control_without_the_shading_gate_a_weak_get_in_termination_frees_a_kept_targets_child() {
    // The two tests flip a process-wide switch: one at a time.
    let _s = serial();
    within(300, "the scenario", || {
        set_shading_gate_for_tests(false);
        let mut lost = None;
        for attempt in 0..8 {
            let o = scenario(Reader::Plain);
            if o.w_live && !o.c_live {
                lost = Some(o);
                break;
            }
            eprintln!("attempt {attempt}: window missed");
        }
        set_shading_gate_for_tests(true);
        let o = lost.expect("without the gate, a read in the termination stop never kept W without C");
        assert!(o.weak_kept && o.read_in_stop, "{o:?}");
    });
}
