//! `Heap::add_root`, `Root::set` and `Heap::weak` refuse a stale handle (an
//! object a collection already freed), as `RootedVec::push` does and as the
//! README promises for stale handles: the same liveness check as the safe
//! accessors, against the heap whose table would hold the slot, with a
//! panic naming the call. Before it (red-team finding G3, session 12:
//! `misc2 stale_root`, 5 of 5 runs) all three accepted it, and the root (or
//! weak reference) then kept and named whatever object later took the
//! freed slot. The negative control (in a child process: the switch is
//! process-wide) turns the check off and shows exactly that.
mod common;
use common::{catch, collect_elsewhere};
use usurp_gc::{gc_type, Gc, GcRef, Heap, HeapConfig, Member, Root, RootedVec};

#[repr(C)]
struct Cell {
    next: Member<Cell>,
    v: usize,
}
gc_type!(Cell { next });

const STALE_VALUE: usize = 0x11f4;

/// A heap (the tests' World: a collection scans only the collecting
/// thread, here a fresh one), this thread attached, a handle to an object
/// that a collection freed (it was referenced only from this thread's
/// stack, which the tests' World does not scan), and a live object `y`
/// (made before the collection, kept by `keep_y`: an allocation after it
/// could reuse the freed slot, and the stale handle would then name it).
fn stale_handle(cfg: HeapConfig) -> (Heap, usurp_gc::MutatorGuard, GcRef, GcRef, Root) {
    common::quiet_panics(&["Heap::add_root", "Root::set", "Heap::weak", "RootedVec"]);
    let h = common::heap_with(cfg);
    let g = h.attach_thread().unwrap();
    let y = Gc::new(Cell { next: Member::null(), v: 7 }).raw();
    let keep_y = h.add_root(Some(y));
    let x = Gc::new(Cell { next: Member::null(), v: STALE_VALUE }).raw();
    collect_elsewhere(&h);
    let m = catch(|| x.descriptor()).expect_err("the handle should be stale after the collection");
    assert!(m.contains("stale"), "{m:?}");
    assert_eq!(y.descriptor().name(), "Cell", "the rooted object is live");
    (h, g, x, y, keep_y)
}

fn refused(f: impl FnOnce()) -> String {
    catch(f).expect_err("a stale handle was accepted")
}

#[test]
fn root_apis_refuse_a_stale_handle() {
    let (h, _g, x, y, _keep_y) = stale_handle(common::config(8 << 20));

    let m = refused(|| drop(h.add_root(Some(x))));
    assert!(m.contains("Heap::add_root") && m.contains("stale GcRef"), "{m:?}");

    let root = h.add_root(Some(y));
    let m = refused(|| root.set(Some(x)));
    assert!(m.contains("Root::set") && m.contains("stale GcRef"), "{m:?}");
    assert_eq!(root.get(), Some(y), "the refused set changed the root");

    let m = refused(|| drop(h.weak(x)));
    assert!(m.contains("Heap::weak") && m.contains("stale GcRef"), "{m:?}");

    // As RootedVec::push (the behaviour the three now share).
    let mut rv = RootedVec::new(&h);
    let m = refused(|| rv.push(Some(x)));
    assert!(m.contains("stale"), "{m:?}");

    // Live handles (and none) are accepted as before.
    root.set(None);
    root.set(Some(y));
    let r2 = h.add_root(Some(y));
    let w = h.weak(y);
    assert_eq!((root.get(), r2.get(), w.get()), (Some(y), Some(y), Some(y)));
    drop(h.add_root(None));
}

/// From a thread the World does not stop (no mutator), the same check
/// runs (a snapshot there: the caller must keep the object rooted, as the
/// README says; here the root keeps `y`).
#[test]
fn root_apis_refuse_a_stale_handle_on_a_plain_thread() {
    let (h, _g, x, y, root) = stale_handle(common::config(8 << 20));
    let h2 = h.clone();
    let out = std::thread::spawn(move || {
        let root = root;
        let set = catch(|| root.set(Some(x)));
        let add = catch(|| drop(h2.add_root(Some(x))));
        let weak = catch(|| drop(h2.weak(x)));
        let ok = catch(|| root.set(Some(y)));
        (set, add, weak, ok, root.get())
    })
    .join()
    .unwrap();
    let (set, add, weak, ok, now) = out;
    assert!(set.as_ref().is_err_and(|m| m.contains("Root::set") && m.contains("stale GcRef")), "{set:?}");
    assert!(add.as_ref().is_err_and(|m| m.contains("Heap::add_root") && m.contains("stale GcRef")), "{add:?}");
    assert!(weak.as_ref().is_err_and(|m| m.contains("Heap::weak") && m.contains("stale GcRef")), "{weak:?}");
    assert!(ok.is_ok(), "a live object refused on a plain thread: {ok:?}");
    assert_eq!(now, Some(y));
}

/// Under checkrefs the freed object is quarantined: the refusal names its
/// type.
#[test]
fn under_checkrefs_the_refusal_names_the_freed_object() {
    let (h, _g, x, _y, _keep_y) = stale_handle(HeapConfig { check_refs: true, ..common::config(8 << 20) });
    let m = refused(|| drop(h.add_root(Some(x))));
    assert!(m.contains("Heap::add_root") && m.contains("was freed") && m.contains("Cell"), "{m:?}");
}

const CHILD: &str = "USURP_ROOT_STALE_HANDLE_CHILD";

/// The negative control: with the check off the three accept the stale
/// handle, and once an allocation reuses its slot the root and the weak
/// reference name the new object (another value) and the root keeps it.
#[test]
fn without_the_check_a_root_names_whatever_takes_the_slot() {
    if std::env::var(CHILD).is_ok() {
        usurp_testsupport::child_watchdog(60, "child watchdog: the scenario hung", 99);
        usurp_gc::internals::set_root_liveness_check_for_tests(false);
        let (h, _g, x, _y, _keep_y) = stale_handle(common::config(8 << 20));
        let kept = h.add_root(Some(x));
        let root = h.add_root(None);
        root.set(Some(x));
        let weak = h.weak(x);
        let mut keep = Vec::new();
        let z = loop {
            let z = Gc::new(Cell { next: Member::null(), v: 0x9000_0000 + keep.len() });
            if z.raw() == x {
                break z;
            }
            assert!(keep.len() < 100_000, "the stale object's slot was never reused");
            keep.push(z);
        };
        for r in [&kept, &root] {
            let now = r.get_as::<Cell>().expect("the root names an object");
            assert_ne!(now.v, STALE_VALUE);
            assert_eq!(now.v, z.v, "the root names the new object");
        }
        assert_eq!(weak.get(), Some(z.raw()), "the weak reference names the new object");
        println!("control: the roots name v={:#x} (was {STALE_VALUE:#x})", z.v);
        return;
    }
    let o = common::run_child("without_the_check_a_root_names_whatever_takes_the_slot", CHILD, "1");
    assert!(
        o.status.success(),
        "the control did not show the defect: {:?}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
