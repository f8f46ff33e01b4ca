//! `Gc<T>` handles move between tasks on different threads (a `GcType` is
//! `Sync`, so `Gc<T>` and `Member<T>` are `Send + Sync`): lists built in
//! three producer tasks travel through an unbounded channel, a bounded one
//! and a rendezvous one (sent through a `Select` with a timeout, retried
//! with the same handle) to a consumer task that selects over all three, on
//! 2 workers, while the producers force collections; every list arrives
//! whole. Before, `Gc<T>` was neither `Send` nor `Sync`, yet `GcRef` (`Send
//! + Sync`) and the safe `Gc::from_ref` gave any thread a `&T`, so a `T`
//! with a `Cell` raced from safe code (a new-user program lost 0.4–4.5% of
//! 10M increments on 2 workers); such a type no longer compiles (the
//! `compile_fail` example on `GcType`).

use std::time::Duration;
use usurp::gc::{gc_type, Gc, Heap, Member};
use usurp::sync::{channel, sync_channel, Select};
use usurp_testsupport::{scale_u64, within};

#[repr(C)]
struct Cell {
    next: Member<Cell>,
    val: u64,
}
gc_type!(compact Cell { next });

fn build(n: u64, seed: u64) -> Gc<Cell> {
    let mut head = None;
    for i in 0..n {
        head = Some(Gc::new(Cell { next: Member::new(head), val: seed * 1000 + i }));
    }
    head.expect("n > 0")
}

/// (sum, length) of the list at `h`.
fn sum(h: Gc<Cell>) -> (u64, u64) {
    let (mut s, mut k, mut p) = (0, 0, Some(h));
    while let Some(c) = p {
        s += c.val;
        k += 1;
        p = c.next.get();
    }
    (s, k)
}

fn len_of(seed: u64) -> u64 {
    50 + seed % 1_000_000 % 200
}

fn expected(seed: u64) -> (u64, u64) {
    let n = len_of(seed);
    ((0..n).map(|i| seed * 1000 + i).sum(), n)
}

const fn assert_send_sync<T: Send + Sync>() {}
const _: () = assert_send_sync::<Gc<Cell>>();
const _: () = assert_send_sync::<Member<Cell>>();

#[test]
fn gc_handles_travel_between_tasks_through_channels_and_select() {
    let rounds = scale_u64(600);
    let (got, bad) = within(300, "lists through channels", move || {
        let rt = usurp::Runtime::builder().workers(2).build().expect("runtime");
        rt.block_on(move || {
            let (utx, urx) = channel::<(u64, Gc<Cell>)>();
            let (btx, brx) = sync_channel::<(u64, Gc<Cell>)>(2);
            let (rtx, rrx) = sync_channel::<(u64, Gc<Cell>)>(0);
            let producers: Vec<_> = (0..3u64)
                .map(|p| {
                    let (utx, btx, rtx) = (utx.clone(), btx.clone(), rtx.clone());
                    usurp::spawn(move || {
                        for r in 0..rounds {
                            let seed = p * 1_000_000 + r;
                            let h = build(len_of(seed), seed);
                            match r % 3 {
                                0 => utx.send((seed, h)).expect("consumer alive"),
                                1 => btx.send((seed, h)).expect("consumer alive"),
                                _ => loop {
                                    let mut sel = Select::new();
                                    let c = sel.send(&rtx, (seed, h));
                                    sel.timeout(Duration::from_micros(200));
                                    let s = sel.wait();
                                    if s.index() == Some(c) {
                                        s.send(&rtx).expect("consumer alive");
                                        break;
                                    }
                                    assert!(s.timed_out());
                                },
                            }
                            if r % 50 == 0 {
                                Heap::current().expect("a task has a heap").collect();
                            }
                        }
                    })
                })
                .collect();
            drop((utx, btx, rtx));
            let consumer = usurp::spawn(move || {
                let (mut got, mut bad) = (0u64, 0u64);
                let (mut u_open, mut b_open, mut r_open) = (true, true, true);
                while u_open || b_open || r_open {
                    let mut sel = Select::new();
                    let u = u_open.then(|| sel.recv(&urx));
                    let b = b_open.then(|| sel.recv(&brx));
                    let r = r_open.then(|| sel.recv(&rrx));
                    let s = sel.wait();
                    let i = s.index();
                    let item = if i == u {
                        s.recv(&urx).map_err(|_| u_open = false)
                    } else if i == b {
                        s.recv(&brx).map_err(|_| b_open = false)
                    } else if i == r {
                        s.recv(&rrx).map_err(|_| r_open = false)
                    } else {
                        panic!("no timeout or default case, yet {:?}", s.chosen())
                    };
                    if let Ok((seed, h)) = item {
                        if got % 7 == 0 {
                            usurp::yield_now(); // let the list's producer collect meanwhile
                        }
                        if sum(h) != expected(seed) {
                            bad += 1;
                        }
                        got += 1;
                    }
                }
                (got, bad)
            });
            for p in producers {
                p.join().expect("producer");
            }
            consumer.join().expect("consumer")
        })
    });
    assert_eq!(bad, 0, "{bad} of {got} lists arrived damaged");
    assert_eq!(got, 3 * rounds, "lists lost");
}
