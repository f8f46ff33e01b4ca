//! 30,000 live tasks (default 256 KiB stacks, each with a guard page: 60,000
//! kernel mappings under the default vm.max_map_count of 65530), all parked
//! at the same time on a gate, then released and completed. Own test binary,
//! so no other test's stacks share the process's mapping budget.
//!
//! Always 30,000 (not scaled by USURP_TEST_SCALE): it takes a few seconds
//! even under qemu.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use usurp::{spawn, Condvar, Mutex, Runtime};

struct Gate {
    state: Mutex<(usize, bool)>, // arrived, open
    all_arrived: Condvar,
    opened: Condvar,
}

#[test]
fn thirty_thousand_live_tasks_park_then_complete() {
    let n = 30_000;
    let rt = Runtime::builder().build().unwrap();
    assert_eq!(rt.stack_size(), 256 * 1024);
    let gate = Arc::new(Gate { state: Mutex::new((0, false)), all_arrived: Condvar::new(), opened: Condvar::new() });
    let done = Arc::new(AtomicUsize::new(0));
    let (sum, done_before_open) = {
        let gate = gate.clone();
        let done = done.clone();
        rt.block_on(move || {
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    let gate = gate.clone();
                    let done = done.clone();
                    spawn(move || {
                        // Touch some stack so every task really has one.
                        let pad = std::hint::black_box([i as u8; 256]);
                        let mut g = gate.state.lock();
                        g.0 += 1;
                        if g.0 == n {
                            gate.all_arrived.notify_one();
                        }
                        let g = gate.opened.wait_while(g, |s| !s.1);
                        drop(g);
                        done.fetch_add(1, Ordering::SeqCst);
                        i + pad[0] as usize - (i as u8) as usize
                    })
                })
                .collect();
            // Wait until every task is parked on the gate: n live tasks at once.
            let g = gate.all_arrived.wait_while(gate.state.lock(), |s| s.0 < n);
            let done_before_open = done.load(Ordering::SeqCst);
            let mut g = g;
            g.1 = true;
            drop(g);
            gate.opened.notify_all();
            let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
            (sum, done_before_open)
        })
    };
    assert_eq!(done_before_open, 0, "tasks passed the gate before it opened");
    assert_eq!(done.load(Ordering::SeqCst), n);
    assert_eq!(sum, n * (n - 1) / 2);
}
