//! Family 3, barrier hammering: pointer stores through the write barrier
//! (`GcRef::set_ptr` into arrays, `Member::set` between typed cells) in hot
//! loops, checked against a shadow copy after a checkpoint.

use super::coordinator::{bump, Ctx, TaskResult};
use super::gc_structures::descs;
use super::rng::Rng;
use super::Kind;
use usurp::checkpoint;
use usurp::gc::{self, gc_type, Gc, Member};

/// A ring cell for typed barrier stores (`Member::set`).
#[repr(C)]
struct Cell {
    next: Member<Cell>,
    id: u64,
}
gc_type!(Cell { next });

const POOL: usize = 64;
const SLOTS: usize = 256;
const CELLS: usize = 32;

pub(crate) fn barrier(ctx: &Ctx, seed: u64) -> TaskResult {
    let d = descs();
    let mut rng = Rng::new(seed);
    let new_leaf = |id: usize| {
        let l = gc::alloc(d.leaf);
        l.set_word(0, id);
        l
    };
    let pool = gc::alloc_array(d.ptrs, POOL);
    for j in 0..POOL {
        pool.set_ptr(1 + j, Some(new_leaf(j)));
    }
    let slots = gc::alloc_array(d.ptrs, SLOTS);
    let cells = gc::alloc_array(d.ptrs, CELLS);
    for j in 0..CELLS {
        let c = Gc::new(Cell { next: Member::new(None), id: j as u64 });
        cells.set_ptr(1 + j, Some(c.raw()));
    }
    let cell = |j: usize| -> Option<Gc<Cell>> { cells.ptr(1 + j).and_then(Gc::from_ref) };
    let mut shadow = [usize::MAX; SLOTS];
    let mut cell_shadow = [u64::MAX; CELLS];
    while !ctx.stopped() {
        for _ in 0..4096 {
            let (i, j) = (rng.range(0, SLOTS), rng.range(0, POOL));
            slots.set_ptr(1 + i, pool.ptr(1 + j));
            shadow[i] = j;
            let (a, b) = (rng.range(0, CELLS), rng.range(0, CELLS));
            if let (Some(ca), Some(cb)) = (cell(a), cell(b)) {
                ca.next.set(Some(cb));
                cell_shadow[a] = b as u64;
            }
        }
        bump(&ctx.c.barrier_stores, 2 * 4096);
        ctx.progress(Kind::Barrier);
        // A fresh leaf with the same id replaces a pool entry: slots may
        // point to old or new leaves, both with id j.
        let j = rng.range(0, POOL);
        pool.set_ptr(1 + j, Some(new_leaf(j)));
        checkpoint();
        for (i, &want) in shadow.iter().enumerate() {
            let got = slots.ptr(1 + i).map_or(usize::MAX, |l| l.word(0));
            if got != want {
                ctx.fail(&ctx.c.barrier_failures, || format!("slot {i} holds leaf {got}, stored {want}"));
            }
        }
        for (a, &want) in cell_shadow.iter().enumerate() {
            let got = cell(a).and_then(|c| c.next.get()).map_or(u64::MAX, |c| c.id);
            if got != want {
                ctx.fail(&ctx.c.barrier_failures, || format!("cell {a}.next is cell {got}, stored {want}"));
            }
        }
    }
    TaskResult::default()
}
