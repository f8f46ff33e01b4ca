//! # usurp-gc: the garbage collector
//!
//! A non-moving mark-sweep collector for language VMs, precise in the heap and
//! conservative on stacks and registers.
//!
//! ## Heap layout
//! One address-range reservation (`HeapConfig::max_heap`, which is also the
//! hard limit) cut into 64 KiB blocks (`space.rs`, `block.rs`). A
//! small object (≤ 32 KiB including its header) lives in a block of its size
//! class (39 classes, 16 B … 32 KiB); a larger one gets its own span of whole
//! blocks. Per block, side tables hold object-start ("allocated") bits and
//! mark bits; block metadata lives in a separate array indexed by block
//! number. Blocks free for two cycles go back to the OS (`MADV_DONTNEED`). A
//! third side table holds a word per block: the descriptor of a typed block
//! of compact objects (below), 0 otherwise.
//!
//! ## Precise heap
//! Every object starts with a header word: a `&'static Descriptor` giving its
//! size and a bitmap of pointer words ([`descriptor`]). Rust types get one from
//! [`gc_type!`]; a VM builds them at run time with [`Descriptor::builder`].
//! Marking reads the bitmap; pointer-free objects are never scanned.
//! **Compact objects** (issue 9) have no header: a fixed descriptor that
//! fits a small size class may opt in ([`Descriptor::compact`],
//! [`DescriptorBuilder::compact`], `gc_type!(compact T { .. })`); its
//! objects' payload starts at the handle's address
//! ([`Descriptor::payload_offset`] 0 instead of 8; `Gc<T>` knows it at
//! compile time, [`GcType::PAYLOAD_OFFSET`]) and they live in *typed
//! blocks*, whose side-table word names their one descriptor (a block
//! never holds two descriptors' objects, nor compact and headered ones;
//! each mutator has an allocation cache per compact descriptor, found by
//! the descriptor's [`CompactId`]; a sweep that empties a typed block
//! frees it and forgets its descriptor). Binary-trees' node is 16 bytes
//! instead of 24. Arrays and larger objects cannot be compact (a
//! const-evaluation error, or [`DescriptorError::CompactTooLarge`]);
//! checkrefs does not quarantine compact objects (they have no header to
//! poison): a stale handle into a typed block is still refused once the
//! block is free, and a stale `Gc<T>` never reads another type.
//! **Tagged values** (issue 14): a descriptor may also declare *value
//! slots* ([`DescriptorBuilder::value_at`], the array equivalent) holding a
//! VM's one-word tagged values; marking decodes them with the heap's
//! [`ValueEncoding`] (`HeapConfig::value_encoding`: untagged, low-bit tags,
//! NaN-boxing): an immediate is skipped, a pointer-tagged word must decode
//! to null or an object start (else it is a *bad value*: counted per slot in
//! [`CycleStats`]/[`GcStats`], the first one named, never followed).
//! Accessors: [`GcRef::value`], [`GcRef::set_value`] (through
//! [`usurp_gc_write_barrier_value`]), [`GcRef::value_ref`]. An
//! array keeps its element count in payload word 0, which no safe call can
//! write (`set_word(0, ..)` / `set_ptr(0, ..)` on an array panic): marking,
//! the verifier and every bounds check trust it.
//!
//! ## Conservative roots
//! Task stacks and saved registers are scanned conservatively: Rust code and
//! interpreters keep raw [`GcRef`] / [`Gc<T>`] in locals with no rooting. A
//! word keeps an object alive if it points anywhere inside it, or exactly one
//! past its exact end (header, if any, + payload per its descriptor; see `mark.rs`). Sweeping is lazy
//! (see "Collection"), and until a block is swept its live objects are
//! `alloc & mark(last cycle)`, which every lookup (conservative, `find_object`,
//! `object_at`, handle checks) uses: a stray word can never revive a dead
//! object whose children are freed. Free slots are discovered by allocation
//! from the object-start bits of swept blocks. Precise roots: [`Root`]
//! handles, [`RootedVec`] (a `Vec`-like container whose elements are roots,
//! for operand stacks and values in flight) and root-scanner callbacks. The full list of what is and is not
//! scanned is under "Roots" below.
//!
//! ## Roots: exactly what keeps an object alive
//! Scanned **conservatively** (a word pointing into an object keeps it; see
//! `mark.rs` for the exact rule; with a NaN-boxing [`ValueEncoding`] a word
//! outside the heap that carries a pointer tag is decoded first, so a
//! NaN-boxed pointer keeps its object too; a low-bit tagged pointer points
//! inside its object anyway) in every cycle's start stop:
//! * the collecting thread's stack from its spilled registers up;
//! * every range the [`World`] reports. With `usurp-sched`'s world that is:
//!   the stacks (and saved or spilled registers) of every task that is not
//!   running — in a concurrent cycle not in the stop but one task at a
//!   time after it, each before it next runs ([`World::scan_task_stacks`];
//!   values moved through the places below meanwhile are shaded as they
//!   move); the captured values of every spawn closure not started yet
//!   (in a concurrent cycle with its task's stack); every join result or
//!   panic payload not yet joined; the values buffered in every `usurp`
//!   channel not yet received (in a concurrent cycle after the stop, with
//!   the world running: [`World::for_each_deferred_range`]; see
//!   `usurp-sched`'s `gc_world.rs`). With [`ThreadWorld`]: the stacks of
//!   parked threads;
//! * the captured values of every finalizer closure, registered or pending
//!   ([`Heap::set_finalizer`]; registered ones with the world running,
//!   after the start stop); while one runs it is on its thread's stack.
//!
//! Scanned **precisely**: [`Root`] handles, [`RootedVec`] elements,
//! [`RootScanner`] callbacks,
//! objects whose finalizer is pending (and all they reference), what an
//! object with a registered finalizer references (not that object itself:
//! Go's finalizer order, see [`Heap::set_finalizer`]), and the
//! pointer fields and value slots (decoded with the heap's
//! [`ValueEncoding`]) of every marked object (per its descriptor).
//!
//! **Not scanned**: any other Rust heap memory (a `Vec<GcRef>`, a `Box`, a
//! `HashMap`, an `Arc<Mutex<..>>`, and the memory *owned* by a scanned value:
//! only a closure's, result's or channel value's own bytes are read, not the
//! elements of a `Vec` it holds), `static`s, thread-locals and task-locals,
//! the frames of a closure given to `blocking`, stacks of threads the world
//! does not know. Hold objects there with a [`Root`] or a root scanner.
//! [`WeakRef`]s never keep anything alive. An object reachable from its own
//! finalizer closure, and a cycle of objects with finalizers, are never
//! collected (Go's rules; see [`Heap::set_finalizer`]).
//!
//! ## Handle checks
//! [`GcRef`] and [`Gc<T>`] are `Copy` addresses; one kept only in Rust heap
//! memory is not a root, and its object may be freed and its memory reused.
//! Every safe accessor (`descriptor`, `len`, `payload_words`, `word`,
//! `set_word`, `is_pointer_slot`, `ptr`, `set_ptr` — which also checks the
//! stored handle — and `Gc<T>`'s `Deref`, which also checks the descriptor is
//! `T`'s) first checks that the address is the start of a published object of
//! the calling thread's heap (its mutator's; another heap's collections would
//! neither stop nor scan the thread), through a process-wide table of heap
//! reservations and the object-start bits (about 3–4 ns), and panics with
//! "stale or foreign GcRef 0x…: not a live object of any usurp heap"
//! otherwise ("another usurp heap" for another heap's object). `unsafe`
//! `*_unchecked` variants and [`Gc::get_unchecked`] skip it. A stale handle
//! whose memory was already reused passes (it reads the new object within
//! its bounds); `USURP_DEBUG=checkrefs=1` ([`HeapConfig::check_refs`])
//! quarantines and poisons freed objects (bounded: a quarter of the heap
//! limit) so such an access is reported with the object's address and
//! descriptor name. Details: `refcheck.rs`.
//!
//! ## Collection (mostly-concurrent marking)
//! 1. *Sweep termination*, world running: every block swept for the last
//!    mark.
//! 2. *Start stop*: `stop the world` → barrier on (`barrier::MARKING`
//!    and the heap's flag) and black allocation on (every mutator's cached
//!    blocks given back, so the blocks taken from now on allocate black) →
//!    scan the roots: the collecting thread's stack and spilled registers,
//!    every range the [`World`] reports (with a World that scans task
//!    stacks one at a time, [`World::begin_concurrent_stack_scan`], not
//!    the task stacks, nor what it defers), precise roots (not the `Root`
//!    table nor `RootedVec` elements: scanned after the restart), root
//!    scanners, pending finalizers → `start the world`.
//!
//!    *Stack scan* (such a World only), world running: the collector asks
//!    the World ([`World::scan_task_stacks`], non-blocking) for every task
//!    stack it can claim, marking from what it found, until every task of
//!    the cycle is scanned (by the collector, or by whoever resumed the
//!    task first). No stop scans all stacks; a task that never reaches a
//!    safe point delays no scan (it was scanned when it resumed after the
//!    start stop), only the termination stop. Reported as
//!    `CycleStats::stack_scan` / `stacks_scanned` (part of the concurrent
//!    mark) and in `gctrace` as `(stacks X ms, N by the collector)`.
//! 3. *Concurrent mark*, world running: the collector first scans the
//!    registered finalizer records (each closure's captures, and each
//!    finalizable object's referents), then marks, with
//!    `mark_workers - 1` scoped marker threads of the heap (default: half
//!    the World's parallelism; they are no mutators and the World does not
//!    stop them), draining the grey set and what the barrier shades
//!    meanwhile, together with the mutators' assists (see "Allocation and
//!    pacing"), which take grey objects from the grey list and to which the
//!    collector's markers (each, every 256 objects) donate half of a stack
//!    when they find it empty.
//!    Who is the collector: cycles the pacer asks for run on the
//!    heap's **background collector** thread (`usurp-gc`, started at the
//!    first request; it is no mutator and its stack is not scanned) when the
//!    World allows it ([`World::background_collection`]: the scheduler's
//!    World and [`ThreadWorld`]), so that no task's worker is taken by a
//!    mark and the allocating task goes on at once; explicit
//!    [`Heap::collect`] calls, collections at the heap limit, and every
//!    cycle of other Worlds run on the calling thread, which marks inside
//!    [`World::blocking`] (it counts as stopped meanwhile). The background
//!    collector brackets its concurrent mark with
//!    [`World::background_marking`], so that a World whose threads fill
//!    the CPUs can take one of them off meanwhile (the runtime's lends a
//!    worker: sched `worker/stand_aside.rs`); the start hand-off pins it to
//!    the CPU the allocating worker gives up, for the start stop
//!    (`pacer.rs`, "Placement").
//! 4. *Termination stop*: `stop the world` → drain what the barrier shaded
//!    since (the heap's grey list; every mutator pushes there directly, so
//!    there are no per-mutator buffers to flush); if more than
//!    `TERMINATION_BUDGET` objects remain to scan, `start the world`, mark
//!    concurrently again and retry (as Go does; the 4th attempt drains
//!    everything) → clear weak references to unmarked objects → barrier
//!    and black allocation off → sweep start (take every mutator's cached
//!    blocks away, publish the new mark generation) → `start the world`.
//!    Then the collector sweeps the blocks holding finalizer records (the
//!    sweep of such a block queues its unmarked finalizable objects and
//!    keeps them: their referents are marked already), so the cycle
//!    returns with its finalizers queued.
//! 5. Lazy sweeping (below); gcverify: stop the world again, verify the
//!    heap, start it (a stop of its own, reported apart from the pause
//!    figures).
//!
//! **Why this is complete.** Hybrid barrier (below) + every root scanned in
//! the start stop + black allocation: an object reachable at the start stop
//! is marked (snapshot at the beginning: every heap pointer deleted during
//! the mark is shaded, every root container was scanned at the start, or,
//! for the `Root` table and the `RootedVec` elements, are scanned with the
//! world running while `Root::set`, a `Root`'s drop and every `RootedVec`
//! method that removes an element shade like the barrier: `roots.rs`), and
//! an object allocated during the mark is black; nothing else can become
//! reachable, except through a weak reference or an address turned back
//! into a handle ([`WeakRef::get`], [`Heap::object_at`],
//! [`Heap::find_object`]), which shade what they hand out. Root slots
//! ([`Root::set`], [`Heap::add_root`], [`RootedVec::push`] /
//! [`RootedVec::set`]; and for removals, a `Root`'s drop and
//! [`RootedVec::pop`] / [`RootedVec::truncate`] / its drop) shade like the
//! barrier, and `Gc::new` shades the
//! pointer fields its initialising store wrote into the new (black) object
//! (the barrier's insertion half for the stores that bypass it; test:
//! `tests/insertion_barrier_bypass.rs`).
//! **Shading from threads the World does not stop** (a plain thread, a
//! task inside `blocking`: they may call `WeakRef::get`, `Root::set`,
//! `add_root`, `object_at`, `find_object` at any time, stops included):
//! each such call (its read and its shade) runs in a *shading section*
//! (`refcheck::shading_section`), a gate the collector closes right after
//! stopping the world for each stop in which it marks (start, termination)
//! and reopens before the restart (after the generation flip, for the last
//! termination stop); a caller that finds it closed waits for the stop's
//! end (it is not stopped, so it may block) and then runs against the
//! state the stop left. Closing waits for the callers inside to leave.
//! Hence nothing is shaded after the termination's last drain (an object
//! marked there would keep its weak reference while its children, never
//! scanned, were freed), no shade's atomic bit-set races the collector's
//! exclusive non-atomic marking in a stop, no shade spans the generation
//! flip (it would set a bit in the next cycle's buffer), and `WeakRef::get`
//! never returns a target the ongoing termination is about to free.
//! Threads the World stops need no gate: a stop never finds them inside
//! such a call (runtime code, never preempted), and the stop and restart
//! order their reads of the marking state. Test:
//! `tests/weak_get_termination.rs` (its control without the gate frees the
//! child of a target the weak reference keeps). A stack needs
//! no rescan: it was scanned in the start stop or, one task at a time,
//! before the task next ran after it, and what a task loads from the heap
//! after its scan was reachable at the start, or shaded when stored into
//! the heap or overwritten there (hybrid barrier), or is new.
//! `HeapConfig::stw_marking` (hidden) keeps the old collector (the whole
//! mark in one stop, parallel on `World::run_parallel`) for controls and
//! baselines. The scheduler implements [`World`]; this crate does not
//! depend on it. The collecting thread spills its registers and scans its
//! own stack. Test: `tests/incremental_marking.rs` (a mark driven step by
//! step with random mutations between steps; its control with the
//! barrier's shading off loses objects).
//!
//! **Lazy sweeping** (no sweep in the pause). Mark bits are double-buffered:
//! cycle `n` marks into buffer `n % 2`, and `Space::gen` (the last completed
//! mark) is published at the end of the pause. Each block has a sweep state
//! (`BlockMeta::swept`); a sweeper claims an unswept block by CAS, rewrites
//! its object-start bits to `alloc & mark`, clears the *other* buffer (the
//! one the next cycle marks into), publishes the state, then frees the block
//! or lists it as partial. Blocks are swept by allocation (a refill sweeps
//! from a shared cursor until a block of its class has room, at most 64
//! blocks, before taking a fresh block; one that leaves for its worker's
//! stop request passes its cooperative point and sweeps on, never takes a
//! fresh block for it (`pacer.rs`); at exhaustion it sweeps everything
//! before failing), by a background thread per heap (`usurp-gc-sweeper`,
//! woken after each pause; not stopped by the World: sweeping is safe beside
//! mutators and lookups), and, for what is left, by the collector before the
//! next mark (sweep termination, world running). A mutator only allocates in
//! swept blocks: the pause flushes every mutator's cached blocks. Rejected:
//! sweeping eagerly in the pause (a pass over every block per pause: what
//! this replaced), and clearing single-buffered marks lazily (a lookup
//! racing the sweep of its block could read the old start bit and the
//! cleared mark, and call a live object dead).
//!
//! ## Failures inside a pause
//! A cycle runs under `catch_unwind` (nothing may unwind through the
//! register-spill frame). A panic while stopping the world has nothing to
//! undo and is resumed; one before the sweep starts (conservative roots, a
//! root scanner, a poisoned lock in one, marking, weak references) clears
//! the mark bits — nothing was freed — and restarts the world, and the
//! collecting caller panics with a message naming what panicked; one in the
//! heap verifier (a stop of its own after the cycle completed) restarts the
//! world and the caller panics; one in the sweep (finalizers are queued by
//! sweeps, including the collector's sweep of the blocks with finalizer
//! records right after the restart), the allocation retried in the pause,
//! the restart or a marking/sweeping job on another thread aborts the
//! process with a message (the heap or the world could not be restored).
//! Never a hang, never an unwind through the pause. One consequence of
//! "nothing freed": a panic after weak references were cleared leaves them
//! cleared, although the next cycle might have found their objects
//! reachable; only the collector's own steps (whose panics are bugs) follow
//! the clearing before the sweep, a root scanner runs before it. A queued
//! finalizer is never undone: it was queued by a sweep, which freed its
//! block's dead objects too. With concurrent marking, a panic
//! while marking with the world running or while stopping it for the
//! termination aborts with a message (the barrier is on and tasks run: the
//! marks cannot be undone safely); a cycle of the background collector that
//! is abandoned (a root scanner panicked) is reported on stderr, there being
//! no caller to resume the panic in.
//!
//! ## Allocation and pacing
//! Each thread attached with [`Heap::attach_thread`] has a [`Mutator`]
//! (per-class cached block, free bits in a word) — no lock or atomic
//! read-modify-write on the fast path, which runs in a no-preemption section.
//! The goal is `(live + black) * (1 + GOGC/100)` (Go's arithmetic), `live`
//! the bytes the last mark found (marked and shaded) and `black` the memory
//! handed out during it (allocated black, kept by its sweep); the heap in
//! use is `live` plus memory handed out since the mark began. A
//! concurrent cycle starts at the pacer's trigger (`pacer.rs`: 7/8 of the
//! growth allowance `goal - live - black`, less what was allocated between the
//! trigger and the start stop last cycle, clamped to 60-95%). While the
//! mark runs, **mutator assists** pace allocation: each block a mutator
//! takes is paid for with mark work in proportion (expected live bytes
//! still unmarked / bytes left before the goal, Go's ratio), done on the
//! way out of the allocation slow path in bounded calls, each of which
//! leaves after the mark slice in which a stop request shows; an assist at the
//! goal that finds no grey object (and an allocation at the goal before the
//! collector's start stop) waits inside [`World::blocking`] until the
//! collector donates some (or starts the cycle), on a condvar that the
//! donation (the start stop) notifies (where the workers and the collector thread
//! outnumber the CPUs, an allocation at the trigger waits for the start
//! stop too, at most 1 ms, so that the collector takes its CPU rather than
//! a running worker's: `pacer.rs`, "Start hand-off"). Nobody waits for a whole cycle. At the hard limit a full
//! collection runs and, if still nothing fits, [`try_alloc`] fails and
//! [`alloc`] panics ("usurp heap limit of N MiB exhausted ..."). Exhaustion
//! is reported only after a full collection that the failing allocation
//! waited for could not make room: the allocation is retried inside that
//! collection's pause, before other threads can take the freed memory.
//!
//! ## Barrier
//! Pointer stores into heap objects go through [`usurp_gc_write_barrier`]
//! (typed: [`Member::set`], [`GcRef::set_ptr`]): **Go's hybrid barrier**
//! (proposal 17503): while a heap marks, shade the value overwritten
//! (Yuasa deletion barrier) and the value stored (Dijkstra insertion
//! barrier), then store. Fast path: one load of a global flag, a branch,
//! the store (measured within noise of the plain out-of-line store it
//! replaced, `benches/refs.rs`). Slow path: shade = atomic mark in the
//! cycle's mark buffer + push on the heap's grey list (a short mutex; no
//! per-mutator buffer: shading is rare in practice, most stores write new,
//! already black objects). The check and the store, slow path included,
//! are in the `usurp_barrier` section, registered as an unsafe range with
//! the preemption engine: no safe point between them (pitfall 7).
//! Rejected: *pure Dijkstra* (shade the new value only) keeps a black
//! object from gaining a white one but not a stack: every stack must be
//! rescanned with the world stopped at the end (the pause grows with the
//! stacks, and rescans repeat while tasks run); *pure SATB/Yuasa* (shade
//! the old value only) needs every stack scanned at the start, which the
//! current start stop does, but not once stacks are scanned one task at a
//! time (issue 9 item 2), when a task whose stack is not scanned yet may
//! store a pointer it alone holds into a black object; the hybrid covers
//! both, at the cost of one more shade per store while marking.
//!
//! Tagged-value stores go through [`usurp_gc_write_barrier_value`]
//! ([`GcRef::set_value`]), beside it in the same section: the same hybrid
//! barrier with the same fast path; while a heap marks it decodes the
//! overwritten and the stored value with the encoding of the object's heap
//! (found from `obj` as the pointer barrier's slow path finds a heap) and
//! shades the objects they name (immediates name none).
//!
//! ## Known pitfalls of conservative mark-sweep, and what this crate does
//! 1. *Half-initialised objects*: the object-start bit is set (Release) only
//!    after the object is zeroed and its header written.
//! 2. *Lazy sweeping vs. conservative lookup*: a block not swept since the
//!    last mark still has the start bits of dead objects; every lookup
//!    (`BlockMeta::is_live`) treats its live set as `alloc & mark(last
//!    cycle)` until it is swept, and every block is swept before the next
//!    mark, so a stray word never revives a dead object (as JSC compares
//!    mark epochs). (The markers' lookup of precise pointers relies on that
//!    last point: during a mark the start bit alone is the rule, see
//!    `mark.rs`.) Test: `tests/lazy_sweep.rs`, with its negative control
//!    `tests/lazy_sweep_control.rs`.
//! 3. *Interior and one-past-the-end pointers*: an interior pointer keeps its
//!    object alive; a word that is an object start (or hits no object) also
//!    keeps the preceding object alive only if that object is an *array*
//!    and the word is its *exact* end (header + length word + elements, not
//!    its size-class slot): the end pointer of a slice iterator over an
//!    array's elements, or a loop base LLVM moved to the end. So a root does
//!    not pin its memory predecessor (and all it reaches), except an array
//!    predecessor that fills its class slot exactly. See `mark.rs`.
//!    Unused guard blocks around the reservation stop neighbouring mappings'
//!    bounds from pointing at the first or last object.
//! 4. *Registers*: the collector spills its own callee-saved registers
//!    (`arch::with_registers_spilled`) and scans its stack from there; the
//!    World reports other tasks' saved/spilled register areas.
//! 5. *Stacks without barriers*: the hybrid barrier shades both the
//!    overwritten and the stored value, so each stack is scanned once, at
//!    any moment of the mark, and never rescanned. With a World that scans
//!    stacks one task at a time ([`World::begin_concurrent_stack_scan`]:
//!    the scheduler's, issue 9 item 2) two more things hold. The barrier
//!    is on in every mutator before the first stack is scanned (else a
//!    scanned task could load an object that a mutator still running
//!    without the barrier then unlinks unshaded): the start stays a stop,
//!    which scans everything but the task stacks and the `Root` table
//!    (scanned after the restart, see "Why this is complete"). And values that move
//!    between tasks through memory the runtime owns without a barrier
//!    (channel buffers, select storage, spawn closures, join results: no
//!    stop of the mark rescans them) are shaded by the runtime while a heap
//!    marks ([`Heap::shade_conservative_range`]), so a task not scanned yet
//!    cannot hand the only reference to a white object to a task already
//!    scanned (Go's channel copies go through the write barrier likewise).
//!    A running task's stack is already scanned (black), so only threads
//!    without a mutator (a task inside `blocking`) must shade, and there
//!    the marking check, the shading and the publication must be one step
//!    against the start stop ([`internals::outside_marking_stops`]): a
//!    Relaxed check before the publication lets a whole start stop run in
//!    between, and the value reaches a scanned task white. `blocking`
//!    closures may not move GC references (captures, results, stores into
//!    shared memory) other than through such shaded publications.
//!    Tests: `tests/gc_stack_scan.rs` (controls: the send-side shading
//!    off, the resume-side claim off).
//! 6. *Allocate black*: a block taken during a mark carries the cycle's
//!    mark buffer and each new object's mark bit is set (an atomic RMW:
//!    markers set bits of the same words) before its start bit is
//!    published; the allocation fast path outside a mark only tests a null
//!    pointer in the cache it already reads.
//! 7. *Check-then-store*: the barrier performs the store itself inside a
//!    registered unsafe range (see "Barrier").
//! 8. *False retention*: not mitigated beyond exact interior checks (no
//!    blacklisting yet); a stray word retains at most what it reaches.
//! 9. *Moving*: nothing moves.
//! 10. *Finalizers*: records kept per block (Go's span specials), found
//!     dead and queued by the sweep of their block, run
//!     later by [`Heap::run_pending_finalizers`], never inside allocation;
//!     resurrection and order rules on [`Heap::set_finalizer`] (Go's: the
//!     referents of finalizable objects are marked, so `a` -> `b` finalizes
//!     `a` first and `b` a cycle after; finalizable cycles leak). Their
//!     closures are roots until they ran, so a finalizer that reaches its
//!     own object never runs (as in Go): direct self-capture is refused
//!     with a panic. A concurrent cycle visits no record in its stops
//!     (they are scanned with the world running); the stop-the-world mark
//!     (a collection at the hard limit, `HeapConfig::stw_marking`) scans
//!     them in its stop, and the allocation retried in a pause may sweep a
//!     block with records (see `GcStats::finalizer_records_in_stops`).
//!
//! ## Integration with the scheduler (what `usurp-sched` does)
//! * Create the heap with [`Heap::with_world`] (or [`Heap::new`] and
//!   [`Heap::set_world`] later, which replaces only the single-thread
//!   [`SoloWorld`]) passing its [`World`] implementation. `World` is an
//!   `unsafe trait`: its `# Safety` section is the exact contract (stop/start,
//!   conservative ranges of every stopped task except the caller,
//!   `run_parallel`, `current_stack_bounds` for task stacks, `blocking`,
//!   `may_attach`, `single_thread`; `thread_attached`/`thread_detached` are
//!   notifications with no-op defaults), which the implementation argues in a
//!   SAFETY comment.
//! * Every OS thread that runs tasks (workers and spare threads that may take
//!   over a worker) calls [`Heap::attach_thread`] when it starts and keeps the
//!   [`MutatorGuard`] until it exits; the guard's drop gives the thread's
//!   cached blocks back (it waits for a collection in progress through
//!   `World::blocking`).
//! * **Only threads the World stops and scans allocate.** `attach_thread`
//!   asks [`World::may_attach`]: the scheduler's World admits only the
//!   runtime's own threads, [`ThreadWorld`] only registered threads
//!   ([`AttachError::Refused`] otherwise; a registered thread cannot leave
//!   while attached: `attach_thread` and the guard's drop tell the World
//!   ([`World::thread_attached`], [`World::thread_detached`]), and dropping
//!   the last `Registration` while attached panics). Allocating on a thread without a
//!   mutator panics with "allocation from a thread outside the runtime".
//!   While a task runs a `blocking` closure (it counts as stopped, a
//!   collection may run), the scheduler takes the thread's mutator away with
//!   [`forbid_allocation`]: allocation there panics with "allocation inside
//!   blocking()". Neither check costs the fast path anything: it already
//!   branches on a null mutator.
//! * **Only threads the World stops touch objects.** The safe accessors
//!   (`GcRef::word`/`ptr`/`set_ptr`/..., `Gc<T>` deref, `Member::set`,
//!   `RootedVec::push`/`set`) panic on a thread without a mutator (a plain
//!   thread, a `blocking` closure): such a thread is not stopped for the
//!   start and termination stops nor scanned, so a pointer it moved could hide a
//!   reachable object, and an object could be freed between its check and
//!   its use. Code run by the collector in its pause (root scanners) may
//!   read objects. The `*_unchecked` accessors and the `extern "C"` barrier
//!   do not check (contract). Cost: one more non-inlined TLS read per
//!   checked access (`benches/refs.rs`).
//! * **Allocation and `Gc<T>` deref are cooperative points** (issues 9
//!   and 11). While the allocating worker has a checkpoint request
//!   outstanding (a stop of the world, a refused quantum tick), allocation
//!   takes its slow path, which calls `usurp_preempt::checkpoint()`; while
//!   any worker has one, a deref calls it from an out-of-line slow path.
//!   When no worker has one, each costs one load of a process-wide word
//!   and a branch. So a stop does not wait for code
//!   outside `preemptible!` sections to finish a walk over objects. Both
//!   only yield on a thread with a mutator, outside no-preemption sections
//!   (`mutator.rs`, `object.rs`).
//! * After [`World::finalizers_pending`] is called, some task calls
//!   [`Heap::run_pending_finalizers`] (never from inside allocation or the
//!   pause).
//! * Allocation ([`alloc`], `Gc::new`) may collect; a collection may run on
//!   any task's stack (it needs a few KiB) and may switch it through
//!   `World::blocking` when another collection is in progress.
//!
//! ## Observability
//! `USURP_DEBUG=gctrace=1` prints one line per cycle: the pause and its parts
//! (time-to-safepoint + root scan + mark in the stops + sweep start), each
//! stop apart (start, termination) and the concurrent mark time, who held
//! the stop up when it waited noticeably ([`World::last_stop_holdup`]), and
//! with gcverify the verifier's own stop apart; [`CycleStats`] and [`GcStats`]
//! hold the same figures (`GcStats::pauses` and `total_pause` exclude the
//! verifier's stops). `gcverify=1` verifies the heap after each cycle
//! in a stop of its own, on the World's threads (`World::run_parallel`);
//! `checkrefs=1` quarantines freed objects to catch
//! stale handles (see "Handle checks"); [`Heap::stats`] returns the numbers.
#![deny(unsafe_op_in_unsafe_fn)]
// `x.is_multiple_of(n)` needs Rust 1.87; the workspace supports 1.80.
#![allow(clippy::manual_is_multiple_of)]

// The ISA's crate, as usurp-preempt chose it (its `archif.rs`: the one place).
use usurp_preempt::arch;

mod barrier;
mod bits;
mod block;
pub mod config;
pub mod descriptor;
mod encoding;
mod heap;
mod mark;
mod mutator;
mod object;
mod pacer;
mod preempt_glue;
mod refcheck;
mod reservation;
mod roots;
mod sizeclass;
mod space;
mod stack;
pub mod stats;
mod verify;
pub mod world;

/// Wiring for usurp's other crates and for this crate's tests: **not part of
/// the API** (no stability promise; `usurp` does not re-export it). The heap
/// layout constants that tests check against, the OS thread's stack bounds
/// the scheduler's World reports, and (with the `test-hooks` feature only)
/// test-only switches.
#[doc(hidden)]
pub mod internals {
    pub use crate::barrier::barrier_code_range;
    pub use crate::block::BLOCK_SIZE;
    // Counters (read-only: they change nothing).
    pub use crate::pacer::{
        assist_wait_counters, fresh_blocks_after_sweep_exits, goal_wait_counters, goal_wait_takeovers, start_handoffs,
    };
    pub use crate::sizeclass::{CLASS_SIZES, MAX_SMALL};
    pub use crate::stack::os_thread_stack_bounds;

    // Test-only switches (negative controls that break the collector's
    // guarantees on purpose) and test probes: compiled only with the
    // `test-hooks` feature, which the workspace's test suites and benches
    // enable through their dev-dependencies. A program built against the
    // library never has them.
    #[cfg(feature = "test-hooks")]
    pub use crate::barrier::{set_barrier_range_registration_for_tests, set_barrier_shading_for_tests};
    #[cfg(feature = "test-hooks")]
    pub use crate::heap::set_typed_block_lists_for_tests;
    #[cfg(feature = "test-hooks")]
    pub use crate::reservation::set_heap_quarantine_for_tests;
    #[cfg(feature = "test-hooks")]
    pub use crate::mark::{
        set_batched_marks_for_tests, set_mark_lookahead_for_tests, set_park_ahead_for_tests,
        set_uncount_duplicates_for_tests,
    };
    #[cfg(feature = "test-hooks")]
    pub use crate::object::set_read_poll_for_tests;
    #[cfg(feature = "test-hooks")]
    pub use crate::heap::{
        collector_placements_for_tests, root_table_scans_in_stops_for_tests, set_collector_placement_for_tests,
        set_release_background_for_tests, set_root_table_in_stop_for_tests, set_sweeper_stall_for_tests,
    };
    #[cfg(feature = "test-hooks")]
    pub use crate::object::set_rust_type_read_check_for_tests;
    #[cfg(feature = "test-hooks")]
    pub use crate::pacer::{
        set_assist_wait_for_tests, set_black_counts_as_marked_for_tests, set_collector_start_delay_for_tests,
        set_goal_wait_on_cv_for_tests, set_goal_wait_takeover_for_tests, set_start_handoff_for_tests,
        set_sweep_exit_checkpoint_for_tests,
    };
    #[cfg(feature = "test-hooks")]
    pub use crate::refcheck::{
        live_heaps_for_tests, release_slow_readers_for_tests, set_table_pin_for_tests, slow_readers_for_tests,
    };
    #[cfg(feature = "test-hooks")]
    pub use crate::roots::{
        set_root_heap_check_for_tests, set_root_liveness_check_for_tests, set_rooted_vec_deletion_shading_for_tests,
    };
    #[cfg(feature = "test-hooks")]
    pub use crate::world::set_exited_thread_check_for_tests;
    /// Test-only switch (lookups trust a block's sweep state less): the
    /// static itself stays (production code reads it, always `false`
    /// without the feature); only its name is gated.
    #[cfg(feature = "test-hooks")]
    pub use crate::space::LOOKUP_IGNORES_SWEEP_STATE;

    /// Whether any heap of the process is marking (one Relaxed load: the
    /// write barrier's flag). A thread the World stops sees the value of
    /// the last stop; others must treat it as a hint (a `true` is then
    /// confirmed under the shading gate, e.g. by
    /// [`Heap::shade_conservative_range`](crate::Heap::shade_conservative_range)).
    #[inline(always)]
    pub fn any_heap_marking() -> bool {
        crate::barrier::MARKING.load(std::sync::atomic::Ordering::Relaxed) != 0
    }

    /// Runs `f` atomically with respect to every collector's marking stops
    /// (start and termination stops), whatever the calling thread: on a
    /// thread the World stops (it has a mutator) or in a pause, directly;
    /// on any other thread (a task inside `blocking`, a plain thread)
    /// inside the shading gate, which a collector closes (waiting for those
    /// inside) right after stopping the world and before it marks. So a
    /// check of [`any_heap_marking`] inside `f` is exact, and what `f`
    /// publishes lands either before the stop's root scan or after it,
    /// seeing marking on. Used by the scheduler to make "is a heap marking?
    /// then shade the value" plus the value's publication (a channel push,
    /// a spawn) one step on threads without a mutator. `f` must not block
    /// on anything a stopped thread or the collector may hold (spin locks
    /// of runtime structures taken by non-preemptible code are fine), nor
    /// wait for a collection. Nested sections run directly.
    pub fn outside_marking_stops<R>(f: impl FnOnce() -> R) -> R {
        crate::refcheck::shading_section(f)
    }

    /// Whether the calling thread has a heap mutator attached (the World
    /// stops it; a task inside `blocking` has none).
    pub fn has_mutator() -> bool {
        !crate::mutator::current_mutator().is_null()
    }

    /// Whether the calling thread has a mutator and only one heap is
    /// registered, so that the mutator is of every heap the caller can
    /// name (one load beside [`has_mutator`]'s; the cheap first test
    /// before [`is_mutator_of`]).
    #[inline(always)]
    pub fn has_mutator_of_sole_heap() -> bool {
        !crate::refcheck::several_heaps() && has_mutator()
    }

    /// Whether the calling thread's mutator is one of `heap` (`heap`'s
    /// stops stop this thread; its shading then takes no gate, see
    /// [`Heap::shade_conservative_range`](crate::Heap::shade_conservative_range)).
    /// `false` without a mutator, or with one of another heap (a
    /// `blocking` closure that attached a heap of its own).
    pub fn is_mutator_of(heap: &crate::Heap) -> bool {
        crate::mutator::current_is_of(heap.handle_entry())
    }

    /// The block holding heap address `addr`: its start, and the compact
    /// descriptor it is typed with (`None`: an untyped block, headered
    /// objects or free). `None` outside every heap. Reads side tables only.
    pub fn block_of(addr: usize) -> Option<(usize, Option<&'static crate::Descriptor>)> {
        crate::refcheck::block_info(addr)
    }
}

pub use barrier::{usurp_gc_write_barrier, usurp_gc_write_barrier_value};
pub use config::{ConfigError, HeapConfig};
pub use descriptor::{ArrayDescriptorBuilder, CompactId, Descriptor, DescriptorBuilder, DescriptorError, GcType, SlotKind};
pub use encoding::ValueEncoding;
pub use heap::{AttachError, Heap, MutatorGuard};
#[doc(hidden)]
pub use pacer::request_exit_counters;
// Test-only switches and probes (see `internals`): `test-hooks` feature only.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use heap::{fail_next_marking_job, set_black_allocation_for_tests};
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use mutator::{set_alloc_checkpoint_for_tests, set_alloc_poll_for_tests};
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use pacer::{set_assists_for_tests, set_leave_for_requests_for_tests, set_mark_delay_for_tests};
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use refcheck::{deref_fast_path_for_tests, handle_table_slot_0_for_tests, set_shading_gate_for_tests};
pub use mutator::{alloc, alloc_array, try_alloc, try_alloc_array, AllocError, Mutator};
pub use world::{forbid_allocation, AllocationForbidden};
pub use object::{Gc, GcRef, Member};
pub use roots::{HeapDropped, Root, RootScanner, RootedVec, ScannerId, WeakRef};
pub use stats::{BadSlot, CycleStats, GcStats};
pub use world::{SoloWorld, ThreadWorld, World};
