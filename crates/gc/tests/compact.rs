//! Compact (headerless) objects in typed blocks (issue 9: binary-trees'
//! RSS): accessors, both scan paths, conservative roots into them, block
//! segregation, stale handles into reused typed blocks, invalid opt-ins.
//! Verifier on (`common::config`). The negative control of the block
//! segregation (per-descriptor lists of typed blocks off) is
//! `tests/compact_control.rs`.

mod common;
use common::*;
use std::hint::black_box;
use usurp_gc::descriptor::CompactId;
use usurp_gc::internals::block_of;
use usurp_gc::{alloc, gc_type, Descriptor, DescriptorError, Gc, GcRef, GcType, Member};

/// binary-trees' node, compact: 16 bytes (the headered one is 24).
#[repr(C)]
pub struct CNode {
    pub left: Member<CNode>,
    pub right: Member<CNode>,
}
gc_type!(compact CNode { left, right });

fn cnode(l: Option<Gc<CNode>>, r: Option<Gc<CNode>>) -> Gc<CNode> {
    Gc::new(CNode { left: Member::new(l), right: Member::new(r) })
}

fn ctree(depth: usize) -> Gc<CNode> {
    if depth == 0 {
        cnode(None, None)
    } else {
        let l = ctree(depth - 1);
        let r = ctree(depth - 1);
        cnode(Some(l), Some(r))
    }
}

fn ccount(t: Gc<CNode>) -> usize {
    1 + t.left.get().map_or(0, ccount) + t.right.get().map_or(0, ccount)
}

#[test]
fn descriptors_say_compact_and_their_payload_offset() {
    let d = CNode::descriptor();
    assert!(d.is_compact() && !d.is_array());
    assert_eq!(d.payload_offset(), 0);
    assert_eq!(<CNode as GcType>::PAYLOAD_OFFSET, 0);
    assert_eq!(d.object_bytes(0), Some(16), "no header word");
    assert_eq!(CVal::descriptor().object_bytes(0), Some(24));
    // Headered descriptors keep their header.
    let h = Descriptor::builder(2).pointer_at(0).build().unwrap();
    assert!(!h.is_compact());
    assert_eq!((h.payload_offset(), h.object_bytes(0)), (8, Some(24)));
    assert_eq!(<Node as GcType>::PAYLOAD_OFFSET, 8);
    // Built at run time.
    let b = Descriptor::builder(3).pointer_at(1).value_at(2).compact().name("rt").build().unwrap();
    assert!(b.is_compact() && b.has_values());
    assert_eq!((b.payload_offset(), b.object_bytes(0)), (0, Some(24)));
}

#[test]
fn invalid_opt_ins_are_refused_clearly() {
    quiet_panics(&["compact"]);
    // Too large for a small size class: the builder's error.
    let max_words = usurp_gc::internals::MAX_SMALL / 8;
    assert!(Descriptor::builder(max_words).compact().build().is_ok(), "the largest small class fits");
    let e = Descriptor::builder(max_words + 1).compact().build().unwrap_err();
    assert_eq!(e, DescriptorError::CompactTooLarge { size_words: max_words + 1 });
    assert!(e.to_string().contains("small size class"), "{e}");
    // The const constructor panics (a compile error in a `static`: see the
    // `compile_fail` doctests of `Descriptor::compact`).
    static ID: CompactId = CompactId::new();
    let big = black_box(max_words + 1);
    let msg = catch(|| Descriptor::fixed("big", big, &[]).compact(&ID)).unwrap_err();
    assert!(msg.contains("must fit a small size class"), "{msg}");
    let msg = catch(|| Descriptor::array("arr", black_box(1), 0).compact(&ID)).unwrap_err();
    assert!(msg.contains("an array descriptor cannot be compact"), "{msg}");
}

/// Every accessor on a compact object reads and writes the payload at
/// offset 0 (the handle is the payload's first word).
#[test]
fn accessors_on_compact_objects() {
    quiet_panics(&["compact"]);
    let h = heap(16 << 20);
    let _g = h.attach_thread().unwrap();
    let leaf = Gc::new(CVal { next: Member::null(), a: 1, b: 2 });
    let v = Gc::new(CVal { next: Member::new(Some(leaf)), a: 0x1111, b: 0x2222 });
    let r = v.raw();
    assert!(std::ptr::eq(r.descriptor(), CVal::descriptor()));
    assert!(r.is_live());
    assert_eq!(r.payload() as usize, r.addr(), "payload at offset 0");
    assert_eq!((r.payload_words(), r.len(), r.is_empty()), (3, 0, true));
    assert_eq!(r.word(0), leaf.raw().addr());
    // A Rust type's plain fields are read through the type (session 12).
    assert!(catch(|| r.word(1)).unwrap_err().contains("Rust type `CVal`"));
    // SAFETY: v is alive (on this stack); word 1 is a whole usize field,
    // initialised and written by no one meanwhile.
    unsafe {
        assert_eq!(r.word_unchecked(1), 0x1111);
        assert!(std::ptr::eq(r.descriptor_unchecked(), CVal::descriptor()));
        assert_eq!(v.get_unchecked().b, 0x2222);
        // The raw memory: no header word in front.
        assert_eq!((r.addr() as *const usize).add(1).read(), 0x1111);
    }
    assert!(r.is_pointer_slot(0) && !r.is_pointer_slot(1));
    assert_eq!(r.ptr(0), Some(leaf.raw()));
    // The safe untyped writes refuse a Rust type's object; the unsafe ones
    // (whose caller keeps the fields valid) write at the compact offsets.
    assert!(catch(|| r.set_word(2, 0x3333)).unwrap_err().contains("Rust type `CVal`"));
    assert!(catch(|| r.set_ptr(0, None)).unwrap_err().contains("Rust type `CVal`"));
    // SAFETY: v is alive (on this stack); word 2 is a usize field, and
    // null is a valid Member<CVal>.
    unsafe {
        r.set_word_unchecked(2, 0x3333);
        r.set_ptr_unchecked(0, None);
    }
    assert_eq!(v.b, 0x3333);
    assert!(v.next.get().is_none());
    v.next.set(Some(leaf));
    assert_eq!(r.ptr(0), Some(leaf.raw()));
    assert_eq!((v.a, v.next.get().unwrap().a), (0x1111, 1));
    assert!(catch(|| r.word(3)).unwrap_err().contains("out of bounds"));
    assert_eq!(Gc::<CVal>::from_ref(r).map(|g| g.raw()), Some(r));
    assert!(Gc::<COther>::from_ref(r).is_none(), "another compact type");
    assert!(Gc::<Node>::from_ref(r).is_none(), "a headered type");
    assert_eq!(h.object_at(r.addr()), Some(r));
    assert_eq!(h.find_object(r.addr() + 12), Some(r), "interior address");
    // Value slots in a run-time compact descriptor.
    let d = Descriptor::builder(3).pointer_at(0).value_at(2).compact().name("cv").build().unwrap();
    let o = alloc(d);
    assert_eq!(o.payload() as usize, o.addr());
    assert!(o.is_value_slot(2));
    o.set_value(2, leaf.raw().addr());
    assert_eq!(o.value(2), leaf.raw().addr());
    assert_eq!(o.value_ref(2), Some(leaf.raw()));
    o.set_word(1, 9);
    assert_eq!(o.word(1), 9);
    assert!(catch(|| o.set_word(0, 5)).unwrap_err().contains("pointer slot"));
    black_box((v, leaf, o));
    h.collect();
    assert_eq!((v.a, v.b, v.next.get().unwrap().b), (0x1111, 0x3333, 2));
    assert_eq!(o.value_ref(2), Some(leaf.raw()));
    let st = h.stats();
    assert_eq!((st.verify_failures, st.bad_pointers, st.bad_values), (0, 0, 0));
    black_box((v, leaf, o));
}

/// The small_ptrs fast path on compact objects: a tree reachable only
/// through compact objects (one root) survives collections; its live bytes
/// are exactly 16 per node; unrooted, it is freed.
#[test]
fn a_compact_tree_survives_through_compact_objects_only_with_exact_live_bytes() {
    let h = heap(64 << 20);
    let (root, n) = on_other_thread(&h, |h| {
        let t = ctree(12);
        (h.add_root(Some(t.raw())), ccount(t))
    });
    assert_eq!(n, (1 << 13) - 1);
    for _ in 0..3 {
        collect_elsewhere(&h);
        let st = h.stats();
        let last = st.last.as_ref().unwrap();
        assert_eq!(last.live_objects, n, "exactly the tree is live");
        assert_eq!(st.heap_live, n * 16, "16 bytes per compact node (24 with a header)");
        assert_eq!((st.verify_failures, st.bad_pointers), (0, 0));
    }
    let _g = h.attach_thread().unwrap();
    let t: Gc<CNode> = Gc::from_ref(root.get().unwrap()).unwrap();
    assert_eq!(ccount(t), n, "tree intact");
    drop(_g);
    let a = t.raw().addr() ^ 0x5a5a;
    drop(root);
    collect_elsewhere(&h);
    assert_eq!(h.object_at(black_box(a) ^ 0x5a5a), None, "unrooted, the compact tree is freed");
    assert_eq!(h.stats().last.unwrap().live_objects, 0);
}

/// The general scan path on compact objects: pointer slots past word 63
/// and value slots, read from payload offset 0.
#[test]
fn the_general_scan_path_reads_compact_payloads_from_offset_zero() {
    let h = heap(64 << 20);
    let wide = Descriptor::builder(70).pointer_at(0).pointer_at(65).compact().name("wide").build().unwrap();
    let vals = Descriptor::builder(2).value_at(0).value_at(1).compact().name("vals").build().unwrap();
    let (root, xs) = on_other_thread(&h, move |h| {
        let a = list(10).unwrap();
        let b = list(20).unwrap();
        let c = list(30).unwrap();
        let w = alloc(wide);
        w.set_ptr(0, Some(a.raw()));
        w.set_ptr(65, Some(b.raw()));
        let v = alloc(vals);
        v.set_value(1, c.raw().addr());
        v.set_value(0, w.addr());
        (h.add_root(Some(v)), [a.raw().addr(), b.raw().addr(), c.raw().addr()].map(|x| x ^ 0x5a5a))
    });
    collect_elsewhere(&h);
    collect_elsewhere(&h);
    let st = h.stats();
    assert_eq!((st.verify_failures, st.bad_pointers, st.bad_values), (0, 0, 0));
    assert_eq!(st.last.unwrap().live_objects, 2 + 10 + 20 + 30);
    let _g = h.attach_thread().unwrap();
    for (x, n) in xs.into_iter().zip([10, 20, 30]) {
        assert!(intact_list(&h, black_box(x) ^ 0x5a5a, n), "list of {n} reached through a compact object");
    }
    drop(root);
}

/// Conservative roots into compact objects: a tree built on another thread
/// and held only through an interior word into its compact root node (on
/// the collecting thread's fresh stack) survives; without that word it is
/// freed. A tree held by a stack/register handle survives too.
#[test]
fn conservative_roots_keep_compact_objects() {
    const X: usize = 0x5a5a;
    let h = heap(64 << 20);
    for hold in [true, false] {
        let (hidden, n) = on_other_thread(&h, |_| {
            let t = ctree(8);
            (t.raw().addr() ^ X, ccount(t))
        });
        let h2 = h.clone();
        let kept = std::thread::Builder::new()
            .stack_size(fresh_stack_size())
            .spawn(move || {
                let _g = h2.attach_thread().unwrap();
                // Only an interior word (8 bytes in: the `right` field).
                let interior = black_box(if hold { (black_box(hidden) ^ X) + 8 } else { 0 });
                h2.collect();
                h2.collect();
                let found = h2.object_at(black_box(hidden) ^ X);
                if hold {
                    let back = h2.find_object(black_box(interior)).expect("interior word kept the compact node");
                    assert_eq!(ccount(Gc::from_ref(back).unwrap()), n);
                }
                black_box(interior);
                found.is_some()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(kept, hold, "kept only while the interior word is on the stack");
        let st = h.stats();
        assert_eq!((st.verify_failures, st.bad_pointers), (0, 0));
    }
    let _g = h.attach_thread().unwrap();
    let t2 = ctree(6);
    let n2 = ccount(t2);
    let t2 = black_box(t2);
    h.collect();
    assert_eq!(ccount(t2), n2, "held by a stack/register handle");
    black_box(t2);
}

/// Compact and headered objects of one size class never share a block;
/// nor do two compact types; every object's block is typed with its own
/// descriptor (or untyped for headered objects), across collections that
/// free half of them and reuse the room.
#[test]
fn compact_and_headered_objects_never_share_a_block() {
    let h = heap(64 << 20);
    h.set_background_sweeping(false);
    let headered = Descriptor::builder(2).pointer_at(0).name("headered24").build().unwrap();
    let check = |objs: &[(GcRef, u8)]| {
        let mut blocks = std::collections::HashMap::new();
        for &(r, kind) in objs {
            let (start, typed) = block_of(r.addr()).expect("in the heap");
            let want = match kind {
                0 => None,
                1 => Some(CVal::descriptor() as *const Descriptor),
                _ => Some(COther::descriptor() as *const Descriptor),
            };
            assert_eq!(typed.map(|d| d as *const Descriptor), want, "object of kind {kind} in a block typed {:?}", typed.map(|d| d.name()));
            assert_eq!(*blocks.entry(start).or_insert(kind), kind, "block {start:#x} holds two kinds");
            let d = r.descriptor();
            assert_eq!(d.is_compact(), kind != 0);
        }
        blocks.len()
    };
    on_other_thread(&h, move |h| {
        let mut objs = Vec::new();
        let mut keep = Vec::new();
        for round in 0..3 {
            for i in 0..9000usize {
                let (r, kind) = match i % 3 {
                    0 => (alloc(headered), 0u8),
                    1 => (Gc::new(CVal { next: Member::null(), a: i, b: round }).raw(), 1),
                    _ => (Gc::new(COther { x: i, next: Member::null(), y: round }).raw(), 2),
                };
                if i % 2 == 0 {
                    keep.push(h.add_root(Some(r)));
                }
                objs.push((r, kind));
            }
            assert!(check(&objs) >= 3);
            // Free the unrooted half; the next round refills the room.
            objs.retain(|&(r, _)| keep.iter().any(|k| k.get() == Some(r)));
            h.collect();
            h.finish_sweep();
        }
        assert!(check(&objs) >= 3);
        // The kept compact objects are intact.
        for (r, kind) in &objs {
            match kind {
                1 => {
                    let v = Gc::<CVal>::from_ref(*r).unwrap();
                    assert!(v.a % 3 == 1 && v.b < 3, "a kept CVal changed: a {} b {}", v.a, v.b);
                }
                2 => assert!(Gc::<COther>::from_ref(*r).is_some()),
                _ => {}
            }
        }
        drop(keep);
    });
    assert_eq!(h.stats().verify_failures, 0);
}

/// A stale handle to a compact object: once its typed block is free, the
/// safe accessors panic ("not a live object"); once the block is typed
/// with another compact descriptor, the stale `Gc<T>` never reads as `T`
/// (deref panics naming the new type) and the raw handle reads the new
/// type's object, never the old descriptor.
#[test]
fn a_stale_compact_handle_never_reads_as_the_wrong_type() {
    quiet_panics(&["compact"]);
    let h = heap(64 << 20);
    h.set_background_sweeping(false);
    // A block's worth of CVal objects, garbage once the thread exits.
    let stale: Vec<usize> = on_other_thread(&h, |_| {
        (0..3000).map(|i| Gc::new(CVal { next: Member::null(), a: i, b: i }).raw().addr() ^ 0x5a5a).collect()
    });
    let stale: Vec<Gc<CVal>> = stale
        .into_iter()
        // SAFETY: not dereferenced unchecked; only the checked accessors
        // are called on these (stale) handles.
        .map(|a| unsafe { Gc::from_ref_unchecked(GcRef::from_addr(black_box(a) ^ 0x5a5a).unwrap()) })
        .collect();
    let first = stale[0];
    assert!(std::ptr::eq(block_of(first.raw().addr()).unwrap().1.unwrap(), CVal::descriptor()));
    collect_elsewhere(&h);
    h.finish_sweep();
    let _g = h.attach_thread().unwrap();
    // Its block is free and forgot its descriptor.
    assert!(block_of(first.raw().addr()).unwrap().1.is_none(), "a freed typed block keeps its descriptor");
    let msg = catch(|| first.a).unwrap_err();
    assert!(msg.contains("not a live object"), "{msg}");
    let msg = catch(|| first.raw().word(1)).unwrap_err();
    assert!(msg.contains("not a live object"), "{msg}");
    assert!(!first.raw().is_live());
    // Now another compact type of the same size class takes the memory.
    let mut others = Vec::new();
    while block_of(first.raw().addr()).unwrap().1.is_none() {
        others.push(Gc::new(COther { x: 7, next: Member::null(), y: 8 }));
        assert!(others.len() < 100_000, "the freed block was never reused");
    }
    assert!(std::ptr::eq(block_of(first.raw().addr()).unwrap().1.unwrap(), COther::descriptor()));
    let mut wrong_type = 0;
    for s in &stale {
        match catch(|| s.a) {
            Ok(_) => panic!("a stale Gc<CVal> read a reused slot as a CVal"),
            Err(m) if m.contains("now is a `COther`") => wrong_type += 1,
            Err(m) => assert!(m.contains("not a live object"), "{m}"),
        }
        if let Ok(d) = catch(|| s.raw().descriptor()) {
            assert!(std::ptr::eq(d, COther::descriptor()), "a stale raw handle read as `{}`", d.name());
        }
    }
    assert!(wrong_type > 0, "no stale handle landed on a reused slot");
    black_box(&others);
}

/// Finalizers and weak references on compact objects.
#[test]
fn finalizers_and_weak_refs_on_compact_objects() {
    let h = heap(16 << 20);
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (weak, kept) = on_other_thread(&h, {
        let ran = ran.clone();
        move |h| {
            let a = cnode(None, None);
            let kept = cnode(None, None);
            let ran = ran.clone();
            h.set_finalizer(a.raw(), move |r| {
                assert!(Gc::<CNode>::from_ref(r).is_some());
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
            (h.weak(a.raw()), h.add_root(Some(kept.raw())))
        }
    });
    collect_elsewhere(&h);
    let _g = h.attach_thread().unwrap();
    assert_eq!(h.run_pending_finalizers(), 1);
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(_g);
    collect_elsewhere(&h);
    assert!(weak.get().is_none(), "the finalized compact object is gone");
    assert!(kept.get().is_some());
    assert_eq!(h.stats().verify_failures, 0);
}

fn clist(n: usize) -> Option<Gc<CVal>> {
    let mut head: Option<Gc<CVal>> = None;
    for i in 0..n {
        head = Some(Gc::new(CVal { next: Member::new(head), a: i, b: !i }));
    }
    head
}

fn clist_ok(mut cur: Option<Gc<CVal>>, n: usize) -> bool {
    let mut expect = n;
    while let Some(c) = cur {
        if expect == 0 || c.a != expect - 1 || c.b != !(expect - 1) {
            return false;
        }
        expect -= 1;
        cur = c.next.get();
    }
    expect == 0
}

/// The barrier and black allocation on compact objects during a stepped
/// concurrent mark: a compact list's tail is unlinked (the deletion
/// barrier shades it: a tagged grey entry) and relinked only through a new
/// compact object allocated black, then the mark finishes. The tail
/// survives, the verifier and the bad-pointer count stay clean.
#[test]
fn the_barrier_and_black_allocation_on_compact_objects() {
    let h = heap(64 << 20);
    h.set_background_sweeping(false);
    let _g = h.attach_thread().unwrap();
    let head = clist(2000).unwrap();
    let root = h.add_root(Some(head.raw()));
    h.collect();
    let head: Gc<CVal> = Gc::from_ref(root.get().unwrap()).unwrap();
    // The node 1000 links before its tail (values 999..0).
    let mut mid = head;
    for _ in 0..1000 {
        mid = mid.next.get().unwrap();
    }
    assert_eq!(mid.a, 999);
    h.debug_begin_marking();
    assert!(!h.debug_mark_steps(3), "still grey work left");
    let tail = mid.next.get();
    mid.next.set(None); // deletion barrier: the tail is shaded (compact, tagged)
    let holder = Gc::new(CVal { next: Member::new(tail), a: 7, b: 7 }); // black
    let again = clist(300).unwrap(); // black, shading its fields
    head.next.get().unwrap().next.get().unwrap().next.set(None);
    let head2 = head.next.get().unwrap().next.get().unwrap();
    head2.next.set(Some(holder)); // insertion barrier
    holder.next.set(tail);
    while !h.debug_mark_steps(7) {}
    h.debug_finish_marking();
    h.finish_sweep();
    // The tail: values 998..0.
    assert!(clist_ok(holder.next.get(), 999), "the shaded tail survived");
    assert!(clist_ok(Some(again), 300));
    h.collect();
    assert!(clist_ok(holder.next.get(), 999));
    let st = h.stats();
    assert_eq!((st.verify_failures, st.bad_pointers), (0, 0));
    black_box((holder, again, root));
}
