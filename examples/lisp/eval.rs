//! The evaluator: a tree-walking dispatch loop in preemptible code.
//!
//! `eval` and `eval_loop` (and the argument binder) are placed in usurp's
//! preemptible linker section with `usurp::preempt::preemptible!`: a timer signal
//! that lands while the PC is in them may park the task at that very
//! instruction, so a guest thread spinning in `(let loop () (loop))` cannot
//! keep the other tasks of its worker from running, nor hold up a
//! stop-the-world collection.
//!
//! Everything they call (allocation, the write barrier, built-ins, the
//! globals table) is ordinary code in which asynchronous preemption is
//! refused — by design: allocation must not be interrupted half-way, and
//! built-ins may take locks. A refused attempt sets the worker's checkpoint
//! flag, and the loop polls `usurp::preempt::checkpoint()` at every procedure call
//! (the only way a guest program loops), so a task that happens to spend
//! most of its time in helpers still yields within a call or two.
//!
//! The same call sites check the interpreter's `exiting` flag: when the
//! main program has finished, guest tasks still running are cancelled at
//! their next call (see `run_program`).
//!
//! GC pointers live in Rust locals here (`env`, argument values, the callee)
//! without any rooting: the task's stack and its saved registers are scanned
//! conservatively when it is parked.

use super::builtins::call_prim;
use super::compile::{Lambda, Node};
use super::value::*;
use super::Ctx;
use std::sync::atomic::Ordering;
use usurp::gc::GcRef;

usurp::preempt::preemptible! {
    /// Evaluate `node` in the environment `env` (`None` = top level).
    pub fn eval(cx: &Ctx, node: &'static Node, env: Option<GcRef>) -> R<Value> {
        let d = cx.depth.get();
        if d >= cx.max_depth {
            return too_deep(cx);
        }
        cx.depth.set(d + 1);
        let r = eval_loop(cx, node, env);
        cx.depth.set(d);
        r
    }

    fn eval_loop(cx: &Ctx, mut node: &'static Node, mut env: Option<GcRef>) -> R<Value> {
        loop {
            match node {
                Node::Const(v) => return Ok(*v),
                Node::Quoted(r) => return Ok(quoted(r)),
                Node::Local(d, i) => return Ok(frame_get(frame_at(env, *d), *i)),
                Node::Global(s, line) => return cx.interp.global(*s, *line),
                Node::SetLocal(d, i, e) => {
                    let v = eval(cx, e, env)?;
                    frame_set(frame_at(env, *d), *i, v);
                    return Ok(VOID);
                }
                Node::SetGlobal(s, e, line) => {
                    let v = eval(cx, e, env)?;
                    cx.interp.set_global(*s, v, *line)?;
                    return Ok(VOID);
                }
                Node::DefGlobal(s, e) => {
                    let v = eval(cx, e, env)?;
                    cx.interp.define_global(*s, v);
                    return Ok(Value::sym(*s));
                }
                Node::If(c, t, e) => {
                    node = if eval(cx, c, env)?.truthy() { t } else { e };
                }
                Node::Begin(v) => {
                    let (last, init) = v.split_last().expect("begin is never empty");
                    for n in init {
                        eval(cx, n, env)?;
                    }
                    node = last;
                }
                Node::And(v) => {
                    let Some((last, init)) = v.split_last() else { return Ok(TRUE) };
                    for n in init {
                        if !eval(cx, n, env)?.truthy() {
                            return Ok(FALSE);
                        }
                    }
                    node = last;
                }
                Node::Or(v) => {
                    let Some((last, init)) = v.split_last() else { return Ok(FALSE) };
                    for n in init {
                        let x = eval(cx, n, env)?;
                        if x.truthy() {
                            return Ok(x);
                        }
                    }
                    node = last;
                }
                Node::Lambda(l) => return make_closure(l, env),
                Node::Call(f, args, line) => {
                    let fv = eval(cx, f, env)?;
                    match closure_parts(fv) {
                        Some((lam, cenv)) => {
                            let frame = bind_args(cx, lam, cenv, args, env, *line)?;
                            // A call is the only way to loop: poll here.
                            if cx.checkpoints {
                                usurp::preempt::checkpoint();
                            }
                            if cx.interp.exiting.load(Ordering::Relaxed) {
                                return cancelled();
                            }
                            node = &lam.body;
                            env = Some(frame);
                        }
                        None if fv.is_prim() => return call_prim_node(cx, fv.prim_index(), args, env, *line),
                        None => return not_a_procedure(cx, fv, *line),
                    }
                }
                Node::NamedLet(lam, inits, line) => {
                    let f = make_frame(1, env)?;
                    let clo = make_closure(lam, Some(f))?;
                    frame_set(f, 0, clo);
                    let frame = bind_args(cx, lam, Some(f), inits, env, *line)?;
                    if cx.checkpoints {
                        usurp::preempt::checkpoint();
                    }
                    if cx.interp.exiting.load(Ordering::Relaxed) {
                        return cancelled();
                    }
                    node = &lam.body;
                    env = Some(frame);
                }
            }
        }
    }

    /// A new frame for `lam` under `cenv`, its parameters bound to the
    /// values of `args` evaluated in `env`. The frame is allocated first and
    /// filled as the arguments are computed: the values never sit in an
    /// unscanned Rust collection.
    fn bind_args(
        cx: &Ctx,
        lam: &'static Lambda,
        cenv: Option<GcRef>,
        args: &'static [Node],
        env: Option<GcRef>,
        line: u32,
    ) -> R<GcRef> {
        if args.len() < lam.nparams || (!lam.rest && args.len() > lam.nparams) {
            return arity_error(lam, args.len(), line);
        }
        let frame = make_frame(lam.nslots, cenv)?;
        for (i, a) in args[..lam.nparams].iter().enumerate() {
            let v = eval(cx, a, env)?;
            frame_set(frame, i, v);
        }
        if lam.rest {
            // The rest list is built front to back in the frame's rest slot.
            let mut tail: Option<GcRef> = None;
            frame_set(frame, lam.nparams, NIL);
            for a in &args[lam.nparams..] {
                let v = eval(cx, a, env)?;
                let p = cons(v, NIL)?;
                match tail {
                    None => frame_set(frame, lam.nparams, p),
                    Some(t) => store(t, CDR, p),
                }
                tail = p.as_ref();
            }
        }
        Ok(frame)
    }

    /// Evaluate the arguments of a built-in into a buffer on this task's
    /// stack (scanned conservatively) and call it.
    fn call_prim_node(cx: &Ctx, p: usize, args: &'static [Node], env: Option<GcRef>, line: u32) -> R<Value> {
        const N: usize = 8;
        let n = args.len();
        if n <= N {
            let mut buf = [VOID; N];
            for (i, a) in args.iter().enumerate() {
                buf[i] = eval(cx, a, env)?;
            }
            let r = call_prim(cx, p, &buf[..n]);
            std::hint::black_box(&buf);
            r.map_err(|e| at_line(e, line))
        } else {
            // Many arguments: the values go into a Vec (Rust heap, not
            // scanned), so each is also stored in a GC vector that stays on
            // the stack until the call returns.
            let keep = make_vector(n, VOID)?;
            let kr = keep.as_ref().unwrap();
            let mut vals = Vec::with_capacity(n);
            for (i, a) in args.iter().enumerate() {
                let v = eval(cx, a, env)?;
                store(kr, elem(i), v);
                vals.push(v);
            }
            let r = call_prim(cx, p, &vals);
            std::hint::black_box(keep);
            r.map_err(|e| at_line(e, line))
        }
    }
}

/// Call a procedure value with arguments (used by built-ins: `apply`,
/// `map`, `spawn`, ...). The caller keeps `args` alive.
pub fn apply(cx: &Ctx, f: Value, args: &[Value]) -> R<Value> {
    match closure_parts(f) {
        Some((lam, cenv)) => {
            if args.len() < lam.nparams || (!lam.rest && args.len() > lam.nparams) {
                return arity_error(lam, args.len(), 0);
            }
            let frame = make_frame(lam.nslots, cenv)?;
            for (i, v) in args[..lam.nparams].iter().enumerate() {
                frame_set(frame, i, *v);
            }
            if lam.rest {
                let mut l = NIL;
                for v in args[lam.nparams..].iter().rev() {
                    l = cons(*v, l)?;
                }
                frame_set(frame, lam.nparams, l);
            }
            eval(cx, &lam.body, Some(frame))
        }
        None if f.is_prim() => call_prim(cx, f.prim_index(), args),
        None => not_a_procedure(cx, f, 0),
    }
}

#[inline(always)]
fn frame_at(env: Option<GcRef>, depth: usize) -> GcRef {
    let mut f = env.expect("compiler resolved a local outside any frame");
    for _ in 0..depth {
        f = frame_parent(f).expect("compiler resolved a local beyond the frame chain");
    }
    f
}

#[inline(always)]
fn quoted(r: &usurp::gc::Root) -> Value {
    Value::obj(r.get().expect("quoted constants stay rooted"))
}

/// A closure of `lam` over `env`: `[code address, env]`.
pub fn make_closure(lam: &'static Lambda, env: Option<GcRef>) -> R<Value> {
    let c = alloc(types().closure)?;
    c.set_word(0, lam as *const Lambda as usize);
    if env.is_some() {
        c.set_ptr(1, env);
    }
    Ok(Value::obj(c))
}

/// The code and environment of a closure value.
#[inline(always)]
pub fn closure_parts(v: Value) -> Option<(&'static Lambda, Option<GcRef>)> {
    let r = v.as_ref()?;
    if !std::ptr::eq(r.descriptor(), types().closure) {
        return None;
    }
    // SAFETY: word 0 of a closure is the address of a leaked `Lambda`
    // (`make_closure` is the only writer).
    let lam = unsafe { &*(r.word(0) as *const Lambda) };
    Some((lam, r.ptr(1)))
}

#[cold]
#[inline(never)]
fn at_line(e: LispError, line: u32) -> LispError {
    if line == 0 || e.0.starts_with("line ") {
        e
    } else {
        LispError(format!("line {line}: {}", e.0))
    }
}

#[cold]
#[inline(never)]
fn arity_error<T>(lam: &Lambda, got: usize, line: u32) -> R<T> {
    let want = if lam.rest { format!("at least {}", lam.nparams) } else { lam.nparams.to_string() };
    Err(at_line(LispError(format!("{}: expects {want} arguments, got {got}", lam.name)), line))
}

#[cold]
#[inline(never)]
fn not_a_procedure<T>(cx: &Ctx, v: Value, line: u32) -> R<T> {
    Err(at_line(LispError(format!("not a procedure: {}", cx.interp.show(v))), line))
}

#[cold]
#[inline(never)]
fn cancelled<T>() -> R<T> {
    err(CANCELLED)
}

/// The error that ends a task cancelled at exit.
pub const CANCELLED: &str = "cancelled: the program ended";

#[cold]
#[inline(never)]
fn too_deep<T>(cx: &Ctx) -> R<T> {
    err(format!("recursion too deep (more than {} nested evaluations)", cx.max_depth))
}
