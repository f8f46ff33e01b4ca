//! # Embedding rules: the contract a VM author must know
//!
//! This module holds no code; it is the list of rules an embedder's VM must
//! follow for usurp's guarantees to hold. Each rule says what happens when
//! it is broken. The full root list is in `usurp-gc`'s crate documentation
//! ("Roots: exactly what keeps an object alive"); this page is the summary.
//!
//! ## 1. What is a root
//!
//! **Scanned (conservatively: any word pointing into an object keeps it):**
//! the stacks and saved registers of every task, the captured values of a
//! spawn closure not started yet, a join result or panic payload not joined
//! yet, the values buffered in a usurp [channel](crate::channel) not
//! received yet, finalizer closures. So GC handles ([`Gc`](crate::gc::Gc),
//! [`GcRef`](crate::gc::GcRef)) in a task's locals, arguments and
//! registers need no ceremony.
//!
//! **Not scanned:** any other Rust heap memory — a `Vec<GcRef>`, a `Box`, a
//! `HashMap`, an `Arc<Mutex<…>>`, and what a scanned value *owns* (a closure
//! capturing a `Vec<GcRef>` is scanned, the `Vec`'s elements are not) —
//! `static`s, `thread_local!`s and [task-locals](crate::task_local), the
//! frames of a closure given to [`blocking`](crate::blocking), and the
//! stacks of threads that are not the runtime's. An object held only there
//! is freed at the next collection and its memory reused; the safe
//! accessors then panic ("stale or foreign GcRef") or, if the memory was
//! reused, read the new object.
//!
//! **Instead use:** [`Root`](crate::gc::Root) for one long-lived handle
//! (a global, a field of a Rust struct), [`RootedVec`](crate::gc::RootedVec)
//! for a growable set (an operand stack, a constant pool, values a VM keeps
//! in Rust collections), or a root scanner
//! ([`Heap::add_root_scanner`](crate::gc::Heap::add_root_scanner)) that
//! reports the VM's own structures precisely in every pause.
//! [`WeakRef`](crate::gc::WeakRef) never keeps anything alive.
//!
//! ## 2. What a root scanner may read
//!
//! A scanner runs in the collector's pause, with every task stopped — and a
//! task may be stopped *between any two instructions* of a `preemptible!`
//! function or JIT code, in the middle of updating the very structure the
//! scanner reads. So a scanner reads only (a) atomics, or (b) state the VM
//! publishes for it (e.g. an operand stack whose length is stored with
//! `Release` after the slot is written, read with `Acquire`), never a
//! half-written `Vec` or a structure behind a lock a stopped task may hold
//! (taking it deadlocks the pause). It must not allocate, collect, attach a
//! thread or block: allocating, collecting or attaching panics ("… inside a
//! collection's pause"). **A panic in a scanner** abandons the collection
//! (mark bits cleared, nothing freed, the world restarted): the task or
//! thread that was collecting (an explicit [`Heap::collect`](crate::gc::Heap::collect),
//! a collection at the heap limit) then panics with a message naming what
//! panicked; a cycle of the heap's background collector has no caller, so
//! it is reported on stderr instead. The heap stays usable; the next cycle
//! calls the scanner again.
//!
//! ## 3. Values in flight between tasks
//!
//! A GC handle moved to another task travels safely inside the spawn
//! closure, a join result or a usurp channel message (all scanned, see 1),
//! as long as the handle itself is in the moved value's own bytes: a
//! `Gc<T>`, a tuple or struct of them, an `Option<GcRef>`. A `Vec<GcRef>`
//! sent through a channel is **not** safe (its elements are on the Rust
//! heap): send a [`RootedVec`](crate::gc::RootedVec), or the handles one by
//! one. `std::sync::mpsc` channels and other Rust queues are never scanned.
//! A handle never leaves its runtime: a task of another `Runtime` (another
//! heap) that dereferences it panics.
//!
//! ## 4. Long builtins
//!
//! A builtin that runs long in Rust (outside `preemptible!` code) holds its
//! worker, and delays every stop-the-world (a collection waits for it). Two
//! ways out:
//! * a call that blocks in the OS or a C library goes in
//!   [`blocking`](crate::blocking): the worker goes on with other tasks,
//!   and the task counts as stopped while the closure runs. The closure
//!   **must not touch the GC heap**: allocation and the safe accessors
//!   panic in it (the thread's mutator is taken away), and its own frames
//!   are not scanned — only the caller's frames up to the `blocking` call
//!   are. Copy what it needs out of the heap before the call, and store
//!   results after it;
//! * a long computation in Rust calls [`checkpoint`](crate::checkpoint) in
//!   chunks (every few microseconds of work: one load and a branch when
//!   nothing is pending), or is written as a `preemptible!` function if it
//!   may be suspended at any instruction (no locks, no libc, see
//!   [`preemptible!`](crate::preemptible)). An allocation and a
//!   [`Gc<T>`](crate::gc::Gc) deref are checkpoints too: while a stop of
//!   the world or a refused quantum tick is outstanding, the task may yield
//!   there (and resume on another OS thread; see section 6). Both poll on
//!   every call (one load and a branch when nothing is pending).
//!
//! ## 5. Only the runtime's threads touch the heap
//!
//! Never attach a plain OS thread to a runtime's heap: the runtime's World
//! does not stop or scan it, so [`Heap::attach_thread`](crate::gc::Heap::attach_thread)
//! refuses it ([`AttachError::Refused`](crate::gc::AttachError::Refused)),
//! and the safe accessors panic on a thread without a mutator. Run heap
//! code in tasks ([`Runtime::spawn`](crate::Runtime::spawn),
//! [`Runtime::block_on`](crate::Runtime::block_on)); a plain thread may hold
//! a [`Root`](crate::gc::Root) and hand it to a task. Code inside a task
//! finds its heap with [`Heap::current`](crate::gc::Heap::current) (or the
//! runtime's [`Runtime::heap`](crate::Runtime::heap)).
//!
//! ## 6. Per-thread state
//!
//! A task may resume on another OS thread after any switch point (a yield,
//! a channel operation, `blocking`, a checkpoint, a preemption, and, as
//! cooperative points, **every allocation in the GC heap and every
//! [`Gc<T>`](crate::gc::Gc) deref**). Do not hold references to
//! `thread_local!` data (or anything tied to the OS thread) across one; use
//! [`task_local!`](crate::task_local) for per-task state.
//!
//! In particular, do not allocate or deref a `Gc<T>` inside a
//! `thread_local!` `with` closure (the task may finish the closure on
//! another thread, with the first thread's value borrowed: that thread's
//! next task finds its `RefCell` already borrowed, and code may keep the
//! first thread's thread-local address), nor while holding a
//! `std::sync::Mutex` (or another OS-level lock) that another task may
//! need: the holder may stop there for a collection, and a task waiting
//! for the lock in the kernel cannot stop, so the stop never completes and
//! the holder never runs again to release it. Instead:
//! * copy what you need out of the heap before taking the lock or entering
//!   the closure, and store results after it;
//! * use [`usurp::sync`](crate::sync) locks, which park a task instead of
//!   blocking its thread;
//! * read objects with the [`GcRef`](crate::gc::GcRef) accessors
//!   ([`GcRef::word`](crate::gc::GcRef::word),
//!   [`GcRef::ptr`](crate::gc::GcRef::ptr), ...) or
//!   [`Gc::get_unchecked`](crate::gc::Gc::get_unchecked), which do not
//!   poll; or
//! * run the section in [`no_preempt`](crate::no_preempt): nothing yields
//!   inside it (the request stays outstanding for the first cooperative
//!   point after the section). Keep such sections short: a stop waits for
//!   them.
//!
//! A call into a [`preemptible!`](crate::preemptible) function counts as a
//! switch point for its caller in ordinary code. Inside `preemptible!` code
//! the runtime takes care of the addresses the compiler keeps: it decodes
//! each preemptible function once and keeps a task preempted in one that
//! touches thread-locals (or called from a preemptible one that does) on
//! its thread; tasks preempted elsewhere migrate.
//!
//! ## 7. Frame pointers
//!
//! Build everything that runs in tasks with
//! `-C force-frame-pointers=yes -C llvm-args=-enable-shrink-wrap=false`.
//! Without them, a task preempted inside a function that has not linked
//! its frame record yet (or has none) has a broken frame-pointer chain:
//! task dumps ([`Runtime::dump_tasks`](crate::Runtime::dump_tasks)),
//! debugger backtraces through a preemption and profilers that walk the
//! chain skip frames or stop early. Registers and GC roots stay exact (the
//! collector scans whole stacks and the spill frame, not the chain).
//! usurp's own `.cargo/config.toml` sets these flags, but **it does not
//! reach an embedder's build**: Cargo reads the configuration of the
//! directory it is run in, not of dependencies. Put the same `[build]
//! rustflags` in your own `.cargo/config.toml` (and remember that a
//! `RUSTFLAGS` environment variable replaces it). The first runtime built
//! checks the prologue of a `preemptible!` function compiled in the same
//! build and prints one warning to stderr when frame pointers are missing.
//!
//! ## 8. Array elements
//!
//! An array object's payload word 0 holds its length; element `j` occupies
//! words `1 + j * elem_words ..` (see
//! [`Descriptor::array_builder`](crate::gc::Descriptor::array_builder)).
//! Address word `k` of element `j` with
//! [`GcRef::elem(j, k)`](crate::gc::GcRef::elem), which checks both
//! indices, rather than with the arithmetic: the length word is read-only
//! for safe code, so an index that forgets the `1 +` panics instead of
//! corrupting the heap, but `elem` says which index was wrong.
