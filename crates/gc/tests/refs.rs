//! Handle safety: what safe calls on `GcRef` / `Gc<T>` may and may not do
//! (issue 10 items 1 and 8).

mod common;
use common::*;
use std::hint::black_box;
use usurp_gc::{alloc_array, Descriptor};

/// Issue 10 item 1: the length word of an array is not writable through any
/// safe call, and the heap stays sound after the attempt.
#[test]
fn an_arrays_length_word_cannot_be_forged() {
    let h = heap(16 << 20);
    let _g = h.attach_thread().unwrap();
    let words = Descriptor::array_builder(1).name("words").build().unwrap();
    let ptrs = Descriptor::array_builder(2).pointer_at(1).name("pairs").build().unwrap();
    let a = alloc_array(words, 4);
    let p = alloc_array(ptrs, 3);
    // What a VM that forgets the `+1` on an element index would do.
    let e = std::panic::catch_unwind(|| a.set_word(0, 1 << 20)).expect_err("set_word(0) on an array was accepted");
    let msg = panic_message(e);
    assert!(msg.contains("payload word 0 of array `words` is its length"), "{msg}");
    let e = std::panic::catch_unwind(|| p.set_word(0, 1 << 20)).expect_err("set_word(0) on a pointer array was accepted");
    assert!(panic_message(e).contains("is its length"));
    let e = std::panic::catch_unwind(|| p.set_ptr(0, Some(a))).expect_err("set_ptr(0) on an array was accepted");
    assert!(panic_message(e).contains("is its length"));
    // Nothing changed: the length and the bounds are the real ones.
    assert_eq!((a.len(), p.len()), (4, 3));
    assert_eq!(a.payload_words(), 5);
    assert!(std::panic::catch_unwind(|| a.word(5)).is_err(), "read past the object");
    // SAFETY: `a` is a live pointer-free array owned by this test.
    assert_eq!(unsafe { a.array_bytes_mut() }.len(), 4 * 8, "the byte view excludes the length word");
    // Element words are writable as before.
    a.set_word(1, 7);
    a.set_word(4, 9);
    p.set_ptr(2, Some(a));
    black_box((a, p));
    h.collect();
    assert_eq!((a.len(), a.word(1), a.word(4), p.ptr(2)), (4, 7, 9, Some(a)));
    let st = h.stats();
    assert_eq!(st.verify_failures, 0, "the verifier found a damaged heap");
    assert_eq!(st.bad_pointers, 0);
    black_box((a, p));
}

/// Issue 10 item 8, the new user's scenario: 1000 handles kept only in a
/// `Vec` (Rust heap, not scanned), then a collection and more allocation.
/// Every safe access through a freed handle panics clearly; once memory is
/// reused, a stale handle reads a live object within its bounds (no
/// undefined behaviour), which checkrefs (next test) makes visible.
#[test]
fn stale_handles_kept_in_a_vec_panic_clearly() {
    quiet_panics(&[]);
    let h = heap(16 << 20);
    let d = Descriptor::builder(3).name("Point").build().unwrap();
    // (Made on another thread, which gives its allocation blocks back when it
    // detaches, so that this thread's allocations below can reuse them.)
    let kept: Vec<usurp_gc::GcRef> = on_other_thread(&h, move |_| {
        (0..1000)
            .map(|i| {
                let r = usurp_gc::alloc(d);
                r.set_word(0, i);
                r
            })
            .collect()
    });
    let _g = h.attach_thread().unwrap();
    let holder = h.add_root(Some(usurp_gc::alloc(Descriptor::builder(1).pointer_at(0).build().unwrap())));
    collect_elsewhere(&h); // only the collecting thread's fresh stack is scanned
    let mut panicked = 0;
    for &r in &kept {
        assert!(!r.is_live());
        let e = catch(|| r.word(0)).expect_err("word() on a freed object returned");
        assert!(e.contains(&format!("stale or foreign GcRef {:#x}: not a live object of any usurp heap", r.addr())), "{e}");
        assert!(catch(|| r.descriptor()).is_err(), "descriptor() on a freed object returned");
        assert!(catch(|| r.set_word(1, 5)).is_err());
        assert!(catch(|| r.len()).is_err());
        assert!(catch(|| r.payload_words()).is_err());
        panicked += 1;
    }
    assert_eq!(panicked, 1000);
    // A stale handle cannot be stored into a live object either.
    let holder = holder.get().unwrap();
    assert!(catch(|| holder.set_ptr(0, Some(kept[0]))).unwrap_err().contains("stale or foreign GcRef"));
    // More allocation reuses the freed slots: stale handles now name live
    // objects (the check cannot tell) and read within their bounds.
    let fresh: Vec<_> = (0..1000).map(|_| usurp_gc::alloc(d)).collect();
    let reused = kept.iter().filter(|r| r.is_live()).count();
    assert!(reused > 900, "only {reused} slots reused");
    for &r in kept.iter().filter(|r| r.is_live()) {
        assert_eq!(r.word(0), 0, "a reused slot is a fresh, zeroed object");
    }
    // A foreign address (not in any heap) is refused too.
    let foreign = Box::new([0usize; 4]);
    // SAFETY: deliberately violating from_addr's contract: the accessors
    // must catch it.
    let f = unsafe { usurp_gc::GcRef::from_addr(foreign.as_ptr() as usize) }.unwrap();
    assert!(catch(|| f.word(0)).unwrap_err().contains("not a live object of any usurp heap"));
    black_box((fresh, holder));
}

/// A stale `Gc<T>` never derefs to a `&T` over freed or reused memory.
#[test]
fn a_stale_typed_handle_never_derefs() {
    quiet_panics(&[]);
    let h = heap(16 << 20);
    let raw: Vec<usurp_gc::GcRef> = on_other_thread(&h, |_| (0..500).map(|i| node(i, None, None).raw()).collect());
    let _g = h.attach_thread().unwrap();
    // Typed while still allocated (no collection yet).
    let kept: Vec<usurp_gc::Gc<Node>> = raw.iter().map(|&r| usurp_gc::Gc::from_ref(r).unwrap()).collect();
    collect_elsewhere(&h);
    for g in &kept {
        let e = catch(|| g.val).expect_err("deref of a freed Gc<Node>");
        assert!(e.contains("stale or foreign GcRef"), "{e}");
    }
    // Reuse the slots with another type of the same size class.
    let other = Descriptor::builder(3).pointer_at(0).name("Other").build().unwrap();
    let fresh: Vec<_> = (0..500).map(|_| usurp_gc::alloc(other)).collect();
    let mut wrong_type = 0;
    for g in &kept {
        let e = catch(|| g.val).expect_err("deref of a stale Gc<Node> over another object");
        if e.contains("the object there now is a `Other`") {
            wrong_type += 1;
        } else {
            assert!(e.contains("stale or foreign GcRef"), "{e}");
        }
    }
    assert!(wrong_type > 400, "only {wrong_type} reused slots seen");
    // The unchecked read is there for code that knows better.
    let live = node(7, None, None);
    // SAFETY: `live` is a live Node on this stack.
    assert_eq!(unsafe { live.get_unchecked() }.val, 7);
    black_box((fresh, live));
}

/// checkrefs: with the debug mode on, freed objects are quarantined and
/// poisoned, so the stale access is reported with the object and its
/// descriptor even after more allocation.
#[test]
fn checkrefs_reports_stale_access_with_the_descriptor() {
    quiet_panics(&[]);
    let h = heap_with(usurp_gc::HeapConfig { check_refs: true, ..config(16 << 20) });
    let d = Descriptor::builder(3).name("Point").build().unwrap();
    let kept: Vec<usurp_gc::GcRef> = on_other_thread(&h, move |_| (0..1000).map(|_| usurp_gc::alloc(d)).collect());
    let _g = h.attach_thread().unwrap();
    collect_elsewhere(&h);
    let fresh: Vec<_> = (0..1000).map(|_| usurp_gc::alloc(d)).collect();
    let kept_set: std::collections::HashSet<_> = kept.iter().map(|r| r.addr()).collect();
    assert!(fresh.iter().all(|r| !kept_set.contains(&r.addr())), "a quarantined slot was reused");
    for &r in &kept {
        let e = catch(|| r.word(0)).expect_err("word() on a quarantined object returned");
        assert!(e.contains(&format!("stale GcRef {:#x}: its `Point` object was freed by a collection", r.addr())), "{e}");
        assert!(catch(|| r.descriptor()).unwrap_err().contains("`Point`"));
        assert_eq!(h.object_at(r.addr()), None, "a quarantined object is not an object");
        // Unchecked reads see poison, not another object's data.
        // SAFETY: reading the payload of a slot that stays mapped and
        // allocated (quarantined) is a plain memory read.
        assert_eq!(unsafe { r.payload().add(1).read() }, 0xdead_f1ee_dead_f1ee);
    }
    // Stale typed handles too.
    let raw: Vec<usurp_gc::GcRef> = on_other_thread(&h, |_| (0..10).map(|i| node(i, None, None).raw()).collect());
    let nodes: Vec<usurp_gc::Gc<Node>> = raw.iter().map(|&r| usurp_gc::Gc::from_ref(r).unwrap()).collect();
    collect_elsewhere(&h);
    let e = catch(|| nodes[3].val).unwrap_err();
    assert!(e.contains("its `Node` object was freed"), "{e}");
    for _ in 0..2 {
        collect_elsewhere(&h);
    }
    assert_eq!(h.stats().verify_failures, 0);
    black_box(fresh);
}

/// checkrefs holds at most a quarter of the heap limit in quarantine and
/// never makes an allocation fail: much more garbage than the limit is fine.
#[test]
fn checkrefs_quarantine_is_bounded() {
    let limit = 8 << 20;
    let h = heap_with(usurp_gc::HeapConfig { check_refs: true, gogc: Some(100), ..config(limit) });
    let _g = h.attach_thread().unwrap();
    let small = Descriptor::builder(5).build().unwrap();
    let big = Descriptor::array_builder(1).build().unwrap();
    for i in 0..usurp_testsupport::scale(400_000) {
        black_box(usurp_gc::alloc(small));
        if i % 1000 == 0 {
            black_box(usurp_gc::alloc_array(big, 40_000)); // 320 KB, a large span
        }
    }
    let st = h.stats();
    assert!(st.cycles >= 3, "{} cycles", st.cycles);
    assert!(st.heap_committed <= limit, "{} committed", st.heap_committed);
    assert_eq!(st.verify_failures, 0);
}

/// RootedVec: elements are precise roots wherever the container lives.
#[test]
fn rooted_vec_elements_are_roots() {
    quiet_panics(&[]);
    let h = heap(16 << 20);
    // The container lives on the Rust heap; the objects were made on another
    // thread, so nothing but the container refers to them.
    let mut v = Box::new(usurp_gc::RootedVec::new(&h));
    let addrs = {
        let h2 = h.clone();
        let vp = &mut *v as *mut usurp_gc::RootedVec as usize;
        std::thread::spawn(move || {
            let _g = h2.attach_thread().unwrap();
            // SAFETY: the test thread waits for this thread and does not
            // touch the container meanwhile.
            let v = unsafe { &mut *(vp as *mut usurp_gc::RootedVec) };
            let mut a = vec![];
            for i in 0..100 {
                let l = list(i % 7 + 1);
                v.push(l.map(|g| g.raw()));
                a.push(l.unwrap().raw().addr());
            }
            v.push(None);
            a
        })
        .join()
        .unwrap()
    };
    assert_eq!(v.len(), 101);
    assert_eq!(v.get(100), None);
    // Reading objects needs a mutator (TestWorld admits several threads).
    let _g = h.attach_thread().unwrap();
    collect_elsewhere(&h);
    for (i, &a) in addrs.iter().enumerate() {
        assert_eq!(v.get(i).map(|r| r.addr()), Some(a));
        check_list(v.get(i).and_then(usurp_gc::Gc::from_ref), i % 7 + 1);
    }
    // Popped and truncated elements are no longer roots.
    assert_eq!(v.pop(), Some(None));
    v.truncate(50);
    collect_elsewhere(&h);
    assert!(addrs[..50].iter().all(|&a| h.object_at(a).is_some()));
    assert!(addrs[50..].iter().all(|&a| h.object_at(a).is_none()), "truncated elements kept");
    // set() replaces a root; a stale handle is refused.
    let dead = addrs[60];
    v.set(0, None);
    collect_elsewhere(&h);
    assert!(h.object_at(addrs[0]).is_none());
    // SAFETY: deliberately stale: push/set must refuse it.
    let stale = unsafe { usurp_gc::GcRef::from_addr(dead) };
    assert!(catch(|| v.push(stale)).unwrap_err().contains("stale or foreign GcRef"));
    assert_eq!(v.len(), 50);
    // Dropping the container unroots everything.
    drop(v);
    collect_elsewhere(&h);
    assert!(addrs.iter().all(|&a| h.object_at(a).is_none()));
    let st = h.stats();
    assert_eq!((st.verify_failures, st.bad_pointers), (0, 0));
}

/// The handle-check table forgets dropped heaps: a handle into a dropped
/// heap is foreign (a clear panic, not a read of unmapped memory), heaps can
/// be created and dropped without end, and too many live at once is a clear
/// error.
#[test]
fn the_heap_table_tracks_live_heaps_only() {
    quiet_panics(&[]);
    let r = {
        let h = heap(1 << 20);
        let _g = h.attach_thread().unwrap();
        let r = usurp_gc::alloc(Descriptor::builder(1).build().unwrap());
        assert!(r.is_live());
        r
    };
    // Accessors need a mutator: attach to another heap.
    let other = heap(1 << 20);
    let _g = other.attach_thread().unwrap();
    assert!(catch(|| r.word(0)).unwrap_err().contains("not a live object of any usurp heap"));
    for _ in 0..600 {
        drop(heap(1 << 20)); // more than the table's 256 slots over time
    }
    // Other tests of this binary run in parallel and hold a few heaps.
    let many: Vec<_> = (0..300).map(|_| usurp_gc::Heap::new(config(1 << 20))).collect();
    let err = many.iter().find_map(|h| h.as_ref().err()).expect("300 heaps alive at once were accepted");
    assert!(err.to_string().contains("usurp heaps alive at once"), "{err}");
    assert!(many.iter().filter(|h| h.is_ok()).count() >= 200);
}

/// Review defect 5: `MutatorGuard` and `forbid_allocation`'s guard nest;
/// dropping them out of order used to reinstall the freed mutator as the
/// thread's current one (use after free from safe code). Now the guard
/// dropped out of order aborts the process with a message. Both orders of
/// misuse are checked in a child process; the child exits 0 (and the test
/// fails) if the misuse goes unnoticed.
#[test]
fn thread_mutator_guards_dropped_out_of_order_abort() {
    if let Ok(mode) = std::env::var("USURP_CHILD_GUARD_ORDER") {
        let h = usurp_gc::Heap::new(usurp_gc::HeapConfig::default()).unwrap();
        if mode == "attach-then-forbid" {
            let g = h.attach_thread().unwrap();
            let f = usurp_gc::forbid_allocation("probe");
            drop(g); // out of order: must abort here
            drop(f);
        } else {
            let f = usurp_gc::forbid_allocation("probe");
            let g = h.attach_thread().unwrap();
            drop(f); // out of order: must abort here
            drop(g);
        }
        eprintln!("child: out-of-order drop went unnoticed; current heap: {:?}", usurp_gc::Heap::current());
        std::process::exit(0);
    }
    for mode in ["attach-then-forbid", "forbid-then-attach"] {
        let out = run_child("thread_mutator_guards_dropped_out_of_order_abort", "USURP_CHILD_GUARD_ORDER", mode);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode}: {err}");
        assert!(err.contains("dropped out of order"), "{mode}: {err}");
    }
    // In order, both nestings are fine.
    let h = usurp_gc::Heap::new(usurp_gc::HeapConfig::default()).unwrap();
    let g = h.attach_thread().unwrap();
    let f = usurp_gc::forbid_allocation("probe");
    assert!(usurp_gc::Heap::current().is_none());
    drop(f);
    assert!(usurp_gc::Heap::current().is_some());
    drop(g);
    assert!(usurp_gc::Heap::current().is_none());
}

/// Run `f` on a fresh attached thread of a new heap whose only root scanner
/// is `scanner`, collect there, and return the collection's panic message
/// (`None` if it did not panic); fails after 10 s instead of hanging.
fn collect_with_scanner(scanner: impl Fn(&usurp_gc::Heap) + Send + Sync + 'static) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let h = usurp_gc::Heap::new(usurp_gc::HeapConfig::default()).unwrap();
        let h2 = h.clone();
        let _g = h.attach_thread().unwrap();
        let id = h.add_root_scanner(Box::new(move |_| scanner(&h2)));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.collect()));
        // The heap still works after the refused call.
        assert!(h.remove_root_scanner(id));
        let l = list(50);
        h.collect();
        check_list(l, 50);
        assert_eq!(h.stats().verify_failures, 0);
        tx.send(r.err().map(panic_message)).unwrap();
    });
    rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the collection hung (or the scenario panicked)")
}

/// Review defect 2: `heap.collect()` from inside a root scanner (the
/// collector collecting during its own pause) deadlocked on the heap's
/// collection lock; allocating there succeeded silently (an object allocated
/// in the pause, before the sweep, unmarked: freed at once). Both now panic
/// clearly and the heap stays usable.
#[test]
fn collecting_or_allocating_inside_the_pause_panics_clearly() {
    let m = collect_with_scanner(|h| h.collect()).expect("collect() inside a root scanner did not panic");
    assert!(m.contains("inside a collection's pause"), "{m}");
    let m = collect_with_scanner(|_| {
        black_box(list(1));
    })
    .expect("allocating inside a root scanner did not panic");
    assert!(m.contains("inside a collection's pause"), "{m}");
}

/// Review defect 7: under checkrefs, objects freed into the quarantine still
/// occupy their slots until evicted; they used to count as neither live nor
/// allocated, so the pacer and `heap_alloc` did not see them. They now count
/// as allocated (not live) memory, as refcheck.rs says.
#[test]
fn quarantined_objects_count_as_allocated_memory() {
    let h = heap_with(usurp_gc::HeapConfig { check_refs: true, ..config(64 << 20) });
    on_other_thread(&h, |_| {
        for _ in 0..100 {
            black_box(list(100));
        }
    });
    collect_elsewhere(&h);
    let s = h.stats();
    // 10,000 dead 32-byte nodes sit in the quarantine.
    let quarantined = s.heap_alloc - s.heap_live;
    assert!(quarantined >= 10_000 * 32, "heap_alloc={} heap_live={}", s.heap_alloc, s.heap_live);
    // Without checkrefs they are freed: nothing but live memory is counted.
    let h = heap(64 << 20);
    on_other_thread(&h, |_| {
        for _ in 0..100 {
            black_box(list(100));
        }
    });
    collect_elsewhere(&h);
    let s = h.stats();
    assert_eq!(s.heap_alloc, s.heap_live);
}

/// Review (unconfirmed item): `RootedVec::push`/`set` accepted a live object
/// of another heap, which that heap's collector would then free (only this
/// heap scans the container). Both now refuse it.
#[test]
fn a_rooted_vec_refuses_objects_of_another_heap() {
    quiet_panics(&[]);
    let h = heap(16 << 20);
    let other = heap(16 << 20);
    let _g = other.attach_thread().unwrap();
    let foreign = usurp_gc::alloc(Descriptor::builder(1).build().unwrap());
    let mut v = usurp_gc::RootedVec::new(&h);
    assert!(catch(|| v.push(Some(foreign))).expect_err("push accepted another heap's object").contains("another heap"));
    v.push(None);
    assert!(catch(|| v.set(0, Some(foreign))).expect_err("set accepted another heap's object").contains("another heap"));
    assert_eq!(v.len(), 1);
    // Objects of its own heap are accepted.
    let v = on_other_thread(&h, move |_| {
        let r = usurp_gc::alloc(Descriptor::builder(1).build().unwrap());
        v.push(Some(r));
        v.set(0, Some(r));
        v
    });
    assert_eq!(v.len(), 2);
    assert!(v.get(0).is_some() && v.get(0) == v.get(1));
}
