//! `weak_get_termination.rs` with a reader attached to *another* heap: a
//! thread's mutator vouches only for its own heap, so with two heaps alive
//! its weak-reference reads of heap a go through the shading gate like a
//! plain thread's (`refcheck::shading_section`). Without that (the bypass
//! for any thread with a mutator), 4 runs of 4 kept W and freed its child C
//! (found by the review of the heap-identity change).
mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usurp_testsupport::scale as test_scale;
use usurp_testsupport::{serial, within};
use usurp_gc::{Heap, HeapConfig, WeakRef};

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

fn scenario(read: bool) -> Outcome {
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
        // A plain thread (not attached, never stopped) that only reads the
        // weak reference.
        std::thread::spawn(move || {
            if !read {
                return;
            }
            // Review: a thread attached to ANOTHER heap (b): a mutator, but
            // not one heap a's World stops.
            let b = Heap::new(HeapConfig { max_heap: 16 << 20, ..HeapConfig::default() }).unwrap();
            let _attached = b.attach_thread().unwrap();
            assert!(usurp_gc::Heap::current().is_some());
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
    eprintln!("read={read}: {o:?}");
    drop(fillers);
    o
}

#[test]
fn weak_get_from_a_thread_of_another_heap_during_termination() {
    // The two tests flip a process-wide switch: one at a time.
    let _s = serial();
    within(300, "the scenario", || {
        // Control: nobody reads: W and C are garbage, the weak ref cleared.
        let o = scenario(false);
        assert_eq!((o.w_live, o.c_live, o.weak_kept), (false, false, false), "{o:?}");
        let mut in_stop = 0;
        for attempt in 0..6 {
            let o = scenario(true);
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

