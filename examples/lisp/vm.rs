//! A small Scheme-flavoured Lisp running on usurp: the interpreter state,
//! per-task context, and the entry point [`run_program`].
//!
//! * [`value`]: the one-word value representation and the heap layouts
//!   (descriptors built at run time);
//! * [`reader`]: text to s-expressions (with line numbers);
//! * [`compile`]: s-expressions to a lexically addressed tree;
//! * [`eval`]: the preemptible dispatch loop;
//! * [`builtins`]: the primitive procedures (arithmetic, lists, strings,
//!   vectors, output, tasks, channels, GC).
//!
//! Roots: the globals table is a fixed array of words scanned by a root
//! scanner ([`usurp::gc::Heap::add_root_scanner`]); quoted constants held by
//! compiled code, values in flight in channels, spawned thunks and task
//! results are each held by a precise [`Root`]. Everything else the
//! interpreter holds (in Rust locals) is found by the conservative scan of
//! task stacks.
#![allow(dead_code)]

#[path = "builtins.rs"]
pub mod builtins;
#[path = "compile.rs"]
pub mod compile;
#[path = "eval.rs"]
pub mod eval;
#[path = "reader.rs"]
pub mod reader;
#[path = "value.rs"]
pub mod value;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usurp::gc::{Heap, Root, ScannerId};
use value::*;

/// How many distinct symbols a program may use (the globals table is a
/// fixed array indexed by symbol id, so the root scanner takes no lock).
pub const MAX_SYMBOLS: usize = 1 << 16;

/// Where `display` output goes.
pub enum Sink {
    /// The process's standard output.
    Stdout,
    /// A buffer (tests).
    Capture(std::sync::Mutex<String>),
}

impl Sink {
    fn write(&self, s: &str) {
        match self {
            Sink::Stdout => {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(s.as_bytes());
                let _ = o.flush();
            }
            Sink::Capture(m) => m.lock().unwrap_or_else(|e| e.into_inner()).push_str(s),
        }
    }
    /// The captured text (empty for stdout).
    pub fn captured(&self) -> String {
        match self {
            Sink::Stdout => String::new(),
            Sink::Capture(m) => m.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// A guest value kept outside any scanned stack (in a channel buffer, a
/// join handle, a spawned closure): heap values are held by a [`Root`].
pub enum Rooted {
    Imm(Value),
    Heap(Root),
}

impl Rooted {
    pub fn new(heap: &Heap, v: Value) -> Rooted {
        match v.as_ref() {
            Some(r) => Rooted::Heap(heap.add_root(Some(r))),
            None => Rooted::Imm(v),
        }
    }
    /// The value (copy it to a local before dropping the `Rooted`).
    pub fn get(&self) -> Value {
        match self {
            Rooted::Imm(v) => *v,
            Rooted::Heap(r) => Value::obj(r.get().expect("rooted values are non-null")),
        }
    }
}

/// A guest channel: an unbounded usurp channel of rooted values. Receivers
/// take turns through a usurp (task-aware) mutex.
pub struct Chan {
    pub tx: usurp::Sender<Rooted>,
    pub rx: usurp::Mutex<usurp::Receiver<Rooted>>,
}

pub type TaskResult = Result<Rooted, String>;

struct Symbols {
    map: HashMap<String, u32>,
    names: Vec<String>,
}

/// The interpreter state shared by all the program's tasks.
pub struct Interp {
    pub heap: Heap,
    symbols: std::sync::Mutex<Symbols>,
    /// Global values by symbol id (0 = unbound). Scanned by a root scanner.
    globals: Arc<[AtomicUsize]>,
    nsyms: Arc<AtomicU32>,
    scanner: ScannerId,
    pub channels: std::sync::Mutex<Vec<Arc<Chan>>>,
    pub tasks: std::sync::Mutex<Vec<Option<usurp::JoinHandle<TaskResult>>>>,
    pub sink: Arc<Sink>,
    pub opts: Options,
    /// Whether a spawned task failed (reported at exit even if never joined).
    pub task_failed: AtomicBool,
    /// Set when the main program has finished: running guest tasks stop at
    /// their next call.
    pub exiting: AtomicBool,
    /// Spawned guest tasks that have not finished.
    pub live_tasks: AtomicUsize,
}

impl Drop for Interp {
    fn drop(&mut self) {
        self.heap.remove_root_scanner(self.scanner);
    }
}

impl Interp {
    pub fn new(heap: Heap, opts: Options, sink: Arc<Sink>) -> Arc<Interp> {
        let globals: Arc<[AtomicUsize]> = (0..MAX_SYMBOLS).map(|_| AtomicUsize::new(0)).collect();
        let nsyms = Arc::new(AtomicU32::new(0));
        // The root scanner runs in the pause: it reads the fixed table with
        // atomics only (no lock, no allocation).
        let (g, n) = (globals.clone(), nsyms.clone());
        let scanner = heap.add_root_scanner(Box::new(move |report| {
            for slot in &g[..n.load(Ordering::Acquire) as usize] {
                if let Some(r) = Value(slot.load(Ordering::Acquire)).as_ref() {
                    report(r);
                }
            }
        }));
        let interp = Interp {
            heap,
            symbols: std::sync::Mutex::new(Symbols { map: HashMap::new(), names: Vec::new() }),
            globals,
            nsyms,
            scanner,
            channels: Default::default(),
            tasks: Default::default(),
            sink,
            opts,
            task_failed: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            live_tasks: AtomicUsize::new(0),
        };
        for (i, p) in builtins::PRIMS.iter().enumerate() {
            let s = interp.intern(p.name).expect("few built-ins");
            interp.define_global(s, Value::prim(i));
        }
        Arc::new(interp)
    }

    /// The id of symbol `name`.
    pub fn intern(&self, name: &str) -> R<u32> {
        let mut s = self.symbols.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = s.map.get(name) {
            return Ok(id);
        }
        let id = s.names.len();
        if id >= MAX_SYMBOLS {
            return err(format!("too many symbols (the limit is {MAX_SYMBOLS})"));
        }
        s.names.push(name.to_string());
        s.map.insert(name.to_string(), id as u32);
        self.nsyms.store(id as u32 + 1, Ordering::Release);
        Ok(id as u32)
    }

    pub fn symbol_name(&self, id: u32) -> String {
        let s = self.symbols.lock().unwrap_or_else(|e| e.into_inner());
        s.names.get(id as usize).cloned().unwrap_or_else(|| format!("#<symbol {id}>"))
    }

    pub fn global(&self, s: u32, line: u32) -> R<Value> {
        match self.globals[s as usize].load(Ordering::Acquire) {
            0 => self.unbound(s, line),
            v => Ok(Value(v)),
        }
    }

    #[cold]
    #[inline(never)]
    fn unbound<T>(&self, s: u32, line: u32) -> R<T> {
        err(format!("line {line}: unbound variable: {}", self.symbol_name(s)))
    }

    pub fn define_global(&self, s: u32, v: Value) {
        self.globals[s as usize].store(v.0, Ordering::Release);
    }

    pub fn set_global(&self, s: u32, v: Value, line: u32) -> R<()> {
        if self.globals[s as usize].load(Ordering::Acquire) == 0 {
            return self.unbound(s, line);
        }
        self.define_global(s, v);
        Ok(())
    }

    /// Report a failed task at once (it may never be joined).
    pub fn report_task_error(&self, msg: &str) {
        eprintln!("lisp: error in a spawned task: {msg}");
    }

    /// The printed form of a value (`display` style).
    pub fn show(&self, v: Value) -> String {
        let mut s = String::new();
        builtins::print(self, v, &mut s, false, 0);
        s
    }
}

/// Per-task interpreter context: the shared state, this task's output
/// buffer (flushed a line at a time, so lines of different tasks never
/// interleave) and its recursion depth.
pub struct Ctx {
    pub interp: Arc<Interp>,
    pub out: RefCell<String>,
    pub depth: Cell<usize>,
    pub max_depth: usize,
    pub checkpoints: bool,
}

impl Ctx {
    pub fn new(interp: Arc<Interp>) -> Ctx {
        let (max_depth, checkpoints) = (interp.opts.max_depth, interp.opts.checkpoints);
        Ctx { interp, out: RefCell::new(String::new()), depth: Cell::new(0), max_depth, checkpoints }
    }
    /// Write the buffered output up to its last newline.
    pub fn flush_lines(&self) {
        let mut o = self.out.borrow_mut();
        if let Some(i) = o.rfind('\n') {
            let rest = o.split_off(i + 1);
            self.interp.sink.write(&o);
            *o = rest;
        }
    }
    /// Write all buffered output.
    pub fn flush(&self) {
        let mut o = self.out.borrow_mut();
        if !o.is_empty() {
            self.interp.sink.write(&o);
            o.clear();
        }
    }
}

/// Interpreter settings.
#[derive(Clone, Debug)]
pub struct Options {
    pub workers: usize,
    pub quantum: Duration,
    pub heap_limit: usize,
    /// Stack of every guest task.
    pub stack_size: usize,
    /// Nested evaluations allowed before "recursion too deep".
    pub max_depth: usize,
    /// Multiplier returned through `(scale n)` (tests shrink loops under qemu).
    pub scale: f64,
    /// Poll `usurp::preempt::checkpoint()` at every guest call (off: only
    /// asynchronous preemption interrupts a spinning guest).
    pub checkpoints: bool,
    /// Timer signals for preemption (off: fully cooperative scheduling,
    /// `checkpoint()` does nothing; a spinning guest is never interrupted).
    pub async_preemption: bool,
    /// Print runtime statistics to stderr at exit.
    pub print_stats: bool,
}

impl Default for Options {
    fn default() -> Self {
        let stack_size = 16 << 20;
        Options {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()).min(8),
            quantum: Duration::from_millis(10),
            heap_limit: 512 << 20,
            stack_size,
            // Each nested evaluation needs well under 1 KiB of stack (eval +
            // eval_loop + bind_args frames); keep a wide margin.
            max_depth: stack_size / 2048,
            scale: 1.0,
            checkpoints: true,
            async_preemption: true,
            print_stats: false,
        }
    }
}

/// Compile and run every top-level form of `src` on the calling task.
pub fn run_source(cx: &Ctx, src: &str) -> Result<(), String> {
    let forms = reader::read_all(src)?;
    for f in &forms {
        let node = compile::Compiler::new(&cx.interp).compile_toplevel(f)?;
        let r = eval::eval(cx, node, None);
        cx.flush_lines();
        r.map_err(|e| e.0)?;
    }
    Ok(())
}

/// Run a whole program: build a runtime (which owns the GC heap), run the
/// top level as a task, and return when it finishes. Output goes to
/// `sink`; the error is the message to show the user.
///
/// Guest tasks still running when the main program ends (e.g. a spinner)
/// are cancelled at their next procedure call, as a process exit kills its
/// threads; we wait (boundedly) for them to finish before dropping the
/// runtime, so that no guest allocation — and no collection — starts while
/// the runtime shuts down. Tasks blocked for good (a `recv` nobody
/// answers) touch no heap and are abandoned with the runtime.
pub fn run_program(src: &str, opts: Options, sink: Arc<Sink>) -> Result<(), String> {
    let rt = usurp::Runtime::builder()
        .workers(opts.workers)
        .quantum(opts.quantum)
        // One-word guest values in heap slots (see value.rs).
        .heap_config(usurp::gc::HeapConfig { value_encoding: ENCODING, ..Default::default() })
        .heap_limit(opts.heap_limit)
        .stack_size(opts.stack_size)
        .async_preemption(opts.async_preemption)
        .thread_name("lisp-worker")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let heap = rt.heap().clone();
    let src = src.to_string();
    let print_stats = opts.print_stats;
    let main = move || -> (Result<(), String>, Arc<Interp>) {
        let interp = Interp::new(heap, opts, sink);
        let cx = Ctx::new(interp.clone());
        let r = run_source(&cx, &src);
        cx.flush();
        (r, interp)
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(main)));
    let r = match r {
        Ok((r, interp)) => {
            interp.exiting.store(true, Ordering::Release);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while interp.live_tasks.load(Ordering::Acquire) != 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            r.and_then(|()| match interp.task_failed.load(Ordering::Acquire) {
                true => Err("a spawned task failed".into()),
                false => Ok(()),
            })
        }
        Err(p) => {
            let msg = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied());
            Err(format!("interpreter bug: panic: {}", msg.unwrap_or("?")))
        }
    };
    if print_stats {
        print_runtime_stats(&rt);
    }
    drop(rt);
    r
}

fn print_runtime_stats(rt: &usurp::Runtime) {
    let s = rt.stats();
    let refused: u64 = s.preempt.refused.iter().sum();
    let max_pause = s.gc.pauses.iter().max().copied().unwrap_or_default();
    eprintln!(
        "lisp: {} workers; async preemptions: {} accepted, {} refused; GC: {} cycles, max pause {:?}, live {} KiB",
        s.workers,
        s.preempt.accepted,
        refused,
        s.gc.cycles,
        max_pause,
        s.gc.heap_live >> 10
    );
}
