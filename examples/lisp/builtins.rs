//! Built-in procedures. They run outside preemptible code (they allocate,
//! take locks and call the scheduler); their arguments arrive in a slice
//! that the caller keeps on its stack or otherwise alive.

use super::eval::{apply, closure_parts};
use super::value::*;
use super::{Chan, Ctx, Interp, Rooted};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use usurp::gc::GcRef;

pub type PrimFn = fn(&Ctx, &[Value]) -> R<Value>;

/// A built-in: name, minimum and maximum argument counts, code.
pub struct Prim {
    pub name: &'static str,
    pub min: usize,
    pub max: usize,
    pub f: PrimFn,
}

const MANY: usize = usize::MAX;

macro_rules! prims {
    ($(($name:expr, $min:expr, $max:expr, $f:expr)),* $(,)?) => {
        pub static PRIMS: &[Prim] = &[$(Prim { name: $name, min: $min, max: $max, f: $f }),*];
    };
}

prims![
    ("+", 0, MANY, add),
    ("-", 1, MANY, sub),
    ("*", 0, MANY, mul),
    ("quotient", 2, 2, |_, a| div_op("quotient", a, |x, y| x / y)),
    ("remainder", 2, 2, |_, a| div_op("remainder", a, |x, y| x % y)),
    ("modulo", 2, 2, |_, a| div_op("modulo", a, |x, y| x.rem_euclid(y))),
    ("=", 1, MANY, |_, a| compare("=", a, |x, y| x == y)),
    ("<", 1, MANY, |_, a| compare("<", a, |x, y| x < y)),
    (">", 1, MANY, |_, a| compare(">", a, |x, y| x > y)),
    ("<=", 1, MANY, |_, a| compare("<=", a, |x, y| x <= y)),
    (">=", 1, MANY, |_, a| compare(">=", a, |x, y| x >= y)),
    ("abs", 1, 1, |_, a| fix_result("abs", int("abs", a[0])?.checked_abs())),
    ("min", 1, MANY, |_, a| fold_ints("min", a, i64::min)),
    ("max", 1, MANY, |_, a| fold_ints("max", a, i64::max)),
    ("zero?", 1, 1, |_, a| Ok(Value::bool(int("zero?", a[0])? == 0))),
    ("even?", 1, 1, |_, a| Ok(Value::bool(int("even?", a[0])? % 2 == 0))),
    ("odd?", 1, 1, |_, a| Ok(Value::bool(int("odd?", a[0])? % 2 != 0))),
    ("not", 1, 1, |_, a| Ok(Value::bool(!a[0].truthy()))),
    ("eq?", 2, 2, |_, a| Ok(Value::bool(a[0] == a[1]))),
    ("equal?", 2, 2, |_, a| Ok(Value::bool(equal(a[0], a[1], 0)))),
    ("number?", 1, 1, |_, a| Ok(Value::bool(a[0].is_fix()))),
    ("symbol?", 1, 1, |_, a| Ok(Value::bool(a[0].is_sym()))),
    ("boolean?", 1, 1, |_, a| Ok(Value::bool(a[0] == TRUE || a[0] == FALSE))),
    ("string?", 1, 1, |_, a| Ok(Value::bool(a[0].kind() == Some(Kind::Str)))),
    ("vector?", 1, 1, |_, a| Ok(Value::bool(a[0].kind() == Some(Kind::Vector)))),
    ("procedure?", 1, 1, |_, a| Ok(Value::bool(a[0].is_prim() || closure_parts(a[0]).is_some()))),
    ("null?", 1, 1, |_, a| Ok(Value::bool(a[0] == NIL))),
    ("pair?", 1, 1, |_, a| Ok(Value::bool(as_pair(a[0]).is_some()))),
    ("cons", 2, 2, |_, a| cons(a[0], a[1])),
    ("car", 1, 1, |cx, a| Ok(car(pair(cx, "car", a[0])?))),
    ("cdr", 1, 1, |cx, a| Ok(cdr(pair(cx, "cdr", a[0])?))),
    ("cadr", 1, 1, |cx, a| Ok(car(pair(cx, "cadr", cdr(pair(cx, "cadr", a[0])?))?))),
    ("set-car!", 2, 2, |cx, a| {
        store(pair(cx, "set-car!", a[0])?, CAR, a[1]);
        Ok(VOID)
    }),
    ("set-cdr!", 2, 2, |cx, a| {
        store(pair(cx, "set-cdr!", a[0])?, CDR, a[1]);
        Ok(VOID)
    }),
    ("list", 0, MANY, |_, a| list_from(a)),
    ("length", 1, 1, |cx, a| Ok(Value::fix(list_len(cx, "length", a[0])? as i64))),
    ("reverse", 1, 1, reverse),
    ("append", 0, MANY, append),
    ("assq", 2, 2, assq),
    ("apply", 2, MANY, |cx, a| {
        let (&last, init) = a.split_last().unwrap();
        let mut args = init[1..].to_vec();
        let mut l = last;
        while let Some(p) = as_pair(l) {
            args.push(car(p));
            l = cdr(p);
        }
        if l != NIL {
            return type_error(cx, "apply", "a proper list", last);
        }
        // `args` is Rust heap memory: `a` (alive in the caller's buffer)
        // and the list keep every element alive.
        apply(cx, a[0], &args)
    }),
    ("map", 2, 2, map),
    ("for-each", 2, 2, for_each),
    ("string-append", 0, MANY, |cx, a| {
        let mut s = String::new();
        for &v in a {
            s.push_str(string(cx, "string-append", v)?);
        }
        make_string(&s)
    }),
    ("string-length", 1, 1, |cx, a| Ok(Value::fix(string(cx, "string-length", a[0])?.len() as i64))),
    ("string=?", 2, 2, |cx, a| Ok(Value::bool(string(cx, "string=?", a[0])? == string(cx, "string=?", a[1])?))),
    ("number->string", 1, 1, |_, a| make_string(&int("number->string", a[0])?.to_string())),
    ("symbol->string", 1, 1, |cx, a| {
        if !a[0].is_sym() {
            return type_error(cx, "symbol->string", "a symbol", a[0]);
        }
        make_string(&cx.interp.symbol_name(a[0].sym_id()))
    }),
    ("make-vector", 1, 2, |_, a| {
        let n = index("make-vector", a[0], usize::MAX)?;
        if n > 1 << 26 {
            return err("make-vector: length too large");
        }
        make_vector(n, a.get(1).copied().unwrap_or(FALSE))
    }),
    ("vector", 0, MANY, |_, a| {
        let v = make_vector(a.len(), VOID)?;
        let r = v.as_ref().unwrap();
        for (i, &x) in a.iter().enumerate() {
            store(r, elem(i), x);
        }
        Ok(v)
    }),
    ("vector-length", 1, 1, |cx, a| Ok(Value::fix(vector(cx, "vector-length", a[0])?.len() as i64))),
    ("vector-ref", 2, 2, |cx, a| {
        let v = vector(cx, "vector-ref", a[0])?;
        Ok(load(v, elem(index("vector-ref", a[1], v.len())?)))
    }),
    ("vector-set!", 3, 3, |cx, a| {
        let v = vector(cx, "vector-set!", a[0])?;
        store(v, elem(index("vector-set!", a[1], v.len())?), a[2]);
        Ok(VOID)
    }),
    ("vector->list", 1, 1, |cx, a| {
        let v = vector(cx, "vector->list", a[0])?;
        let mut l = NIL;
        for i in (0..v.len()).rev() {
            l = cons(load(v, elem(i)), l)?;
        }
        Ok(l)
    }),
    ("display", 1, 1, |cx, a| {
        let mut s = String::new();
        print(&cx.interp, a[0], &mut s, false, 0);
        cx.out.borrow_mut().push_str(&s);
        Ok(VOID)
    }),
    ("write", 1, 1, |cx, a| {
        let mut s = String::new();
        print(&cx.interp, a[0], &mut s, true, 0);
        cx.out.borrow_mut().push_str(&s);
        Ok(VOID)
    }),
    ("newline", 0, 0, |cx, _| {
        cx.out.borrow_mut().push('\n');
        cx.flush_lines();
        Ok(VOID)
    }),
    ("error", 1, MANY, |cx, a| {
        let mut s = String::new();
        print(&cx.interp, a[0], &mut s, false, 0);
        for &x in &a[1..] {
            s.push(' ');
            print(&cx.interp, x, &mut s, true, 0);
        }
        Err(LispError(s))
    }),
    ("scale", 1, 1, |cx, a| {
        let n = int("scale", a[0])?;
        Ok(Value::fix(((n as f64 * cx.interp.opts.scale) as i64).max(1)))
    }),
    ("spawn", 1, MANY, spawn),
    ("join", 1, 1, join),
    ("make-channel", 0, 0, make_channel),
    ("send", 2, 2, send),
    ("recv", 1, 1, recv),
    ("sleep", 1, 1, |_, a| {
        in_task("sleep")?;
        let ms = index("sleep", a[0], usize::MAX)?;
        usurp::sleep(Duration::from_millis(ms as u64));
        Ok(VOID)
    }),
    ("yield", 0, 0, |_, _| {
        in_task("yield")?;
        usurp::yield_now();
        Ok(VOID)
    }),
    ("gc", 0, 0, |cx, _| {
        cx.interp.heap.collect();
        Ok(VOID)
    }),
    ("heap-stats", 0, 0, heap_stats),
];

/// Call built-in `i`, checking its argument count.
pub fn call_prim(cx: &Ctx, i: usize, args: &[Value]) -> R<Value> {
    let p = &PRIMS[i];
    if args.len() < p.min || args.len() > p.max {
        return arity(p, args.len());
    }
    (p.f)(cx, args)
}

#[cold]
#[inline(never)]
fn arity<T>(p: &Prim, got: usize) -> R<T> {
    let want = match (p.min, p.max) {
        (a, b) if a == b => a.to_string(),
        (a, MANY) => format!("at least {a}"),
        (a, b) => format!("{a} to {b}"),
    };
    err(format!("{}: expects {want} arguments, got {got}", p.name))
}

#[cold]
#[inline(never)]
fn type_error<T>(cx: &Ctx, who: &str, want: &str, v: Value) -> R<T> {
    let mut s = String::new();
    print(&cx.interp, v, &mut s, true, 0);
    err(format!("{who}: expected {want}, got {s}"))
}

// ---- argument checks ------------------------------------------------------------

fn int(who: &str, v: Value) -> R<i64> {
    if v.is_fix() {
        Ok(v.as_fix())
    } else {
        // No Ctx here: name the kind rather than print the value.
        err(format!("{who}: expected an integer, got {}", kind_name(v)))
    }
}

fn kind_name(v: Value) -> &'static str {
    match v {
        NIL => "()",
        TRUE | FALSE => "a boolean",
        VOID => "the unspecified value",
        _ if v.is_fix() => "an integer",
        _ if v.is_sym() => "a symbol",
        _ if v.is_prim() => "a procedure",
        _ => match v.kind() {
            Some(Kind::Pair) => "a pair",
            Some(Kind::Str) => "a string",
            Some(Kind::Vector) => "a vector",
            Some(Kind::Closure) => "a procedure",
            Some(Kind::Channel) => "a channel",
            Some(Kind::Task) => "a task",
            _ => "an object",
        },
    }
}

fn index(who: &str, v: Value, len: usize) -> R<usize> {
    let n = int(who, v)?;
    if n < 0 || n as u64 >= len as u64 {
        return err(format!("{who}: index {n} out of range"));
    }
    Ok(n as usize)
}

fn pair(cx: &Ctx, who: &str, v: Value) -> R<GcRef> {
    match as_pair(v) {
        Some(p) => Ok(p),
        None => type_error(cx, who, "a pair", v),
    }
}

fn string<'a>(cx: &Ctx, who: &str, v: Value) -> R<&'a str> {
    match v.kind() {
        Some(Kind::Str) => Ok(string_str(v.as_ref().unwrap())),
        _ => type_error(cx, who, "a string", v),
    }
}

fn vector(cx: &Ctx, who: &str, v: Value) -> R<GcRef> {
    match v.kind() {
        Some(Kind::Vector) => Ok(v.as_ref().unwrap()),
        _ => type_error(cx, who, "a vector", v),
    }
}

fn fix_result(who: &str, n: Option<i64>) -> R<Value> {
    match n {
        Some(n) if (FIX_MIN..=FIX_MAX).contains(&n) => Ok(Value::fix(n)),
        _ => err(format!("{who}: integer overflow")),
    }
}

// ---- arithmetic ---------------------------------------------------------------

fn add(_: &Ctx, a: &[Value]) -> R<Value> {
    let mut acc: i64 = 0;
    for &v in a {
        acc = match acc.checked_add(int("+", v)?) {
            Some(x) if (FIX_MIN..=FIX_MAX).contains(&x) => x,
            _ => return err("+: integer overflow"),
        };
    }
    Ok(Value::fix(acc))
}

fn sub(_: &Ctx, a: &[Value]) -> R<Value> {
    let first = int("-", a[0])?;
    if a.len() == 1 {
        return fix_result("-", first.checked_neg());
    }
    let mut acc = first;
    for &v in &a[1..] {
        acc = match acc.checked_sub(int("-", v)?) {
            Some(x) if (FIX_MIN..=FIX_MAX).contains(&x) => x,
            _ => return err("-: integer overflow"),
        };
    }
    Ok(Value::fix(acc))
}

fn mul(_: &Ctx, a: &[Value]) -> R<Value> {
    let mut acc: i64 = 1;
    for &v in a {
        acc = match acc.checked_mul(int("*", v)?) {
            Some(x) if (FIX_MIN..=FIX_MAX).contains(&x) => x,
            _ => return err("*: integer overflow"),
        };
    }
    Ok(Value::fix(acc))
}

fn div_op(who: &str, a: &[Value], f: fn(i64, i64) -> i64) -> R<Value> {
    let (x, y) = (int(who, a[0])?, int(who, a[1])?);
    if y == 0 {
        return err(format!("{who}: division by zero"));
    }
    fix_result(who, Some(f(x, y)))
}

fn compare(who: &str, a: &[Value], f: fn(i64, i64) -> bool) -> R<Value> {
    let mut prev = int(who, a[0])?;
    let mut ok = true;
    for &v in &a[1..] {
        let x = int(who, v)?;
        ok &= f(prev, x);
        prev = x;
    }
    Ok(Value::bool(ok))
}

fn fold_ints(who: &str, a: &[Value], f: fn(i64, i64) -> i64) -> R<Value> {
    let mut acc = int(who, a[0])?;
    for &v in &a[1..] {
        acc = f(acc, int(who, v)?);
    }
    Ok(Value::fix(acc))
}

// ---- lists ----------------------------------------------------------------------

/// Builds a list front to back. Keep it in a local: its head and tail are
/// then on the stack (scanned), and the pairs are linked through the
/// barrier.
struct ListBuilder {
    head: Value,
    tail: Option<GcRef>,
}

impl ListBuilder {
    fn new() -> Self {
        ListBuilder { head: NIL, tail: None }
    }
    fn push(&mut self, v: Value) -> R<()> {
        let p = cons(v, NIL)?;
        match self.tail {
            None => self.head = p,
            Some(t) => store(t, CDR, p),
        }
        self.tail = p.as_ref();
        Ok(())
    }
}

fn list_from(a: &[Value]) -> R<Value> {
    let mut l = NIL;
    for &v in a.iter().rev() {
        l = cons(v, l)?;
    }
    Ok(l)
}

fn list_len(cx: &Ctx, who: &str, mut l: Value) -> R<usize> {
    let start = l;
    let mut n = 0;
    while let Some(p) = as_pair(l) {
        n += 1;
        l = cdr(p);
    }
    if l != NIL {
        return type_error(cx, who, "a proper list", start);
    }
    Ok(n)
}

fn reverse(cx: &Ctx, a: &[Value]) -> R<Value> {
    list_len(cx, "reverse", a[0])?;
    let mut out = NIL;
    let mut l = a[0];
    while let Some(p) = as_pair(l) {
        out = cons(car(p), out)?;
        l = cdr(p);
    }
    Ok(out)
}

fn append(cx: &Ctx, a: &[Value]) -> R<Value> {
    let Some((&last, init)) = a.split_last() else { return Ok(NIL) };
    let mut b = ListBuilder::new();
    for &l in init {
        list_len(cx, "append", l)?;
        let mut l = l;
        while let Some(p) = as_pair(l) {
            b.push(car(p))?;
            l = cdr(p);
        }
    }
    match b.tail {
        None => Ok(last),
        Some(t) => {
            store(t, CDR, last);
            Ok(b.head)
        }
    }
}

fn assq(_: &Ctx, a: &[Value]) -> R<Value> {
    let mut l = a[1];
    while let Some(p) = as_pair(l) {
        if let Some(e) = as_pair(car(p)) {
            if car(e) == a[0] {
                return Ok(Value::obj(e));
            }
        }
        l = cdr(p);
    }
    Ok(FALSE)
}

fn map(cx: &Ctx, a: &[Value]) -> R<Value> {
    list_len(cx, "map", a[1])?;
    let mut b = ListBuilder::new();
    let mut l = a[1];
    while let Some(p) = as_pair(l) {
        let x = [car(p)];
        let y = apply(cx, a[0], &x)?;
        b.push(y)?;
        l = cdr(p);
    }
    Ok(b.head)
}

fn for_each(cx: &Ctx, a: &[Value]) -> R<Value> {
    list_len(cx, "for-each", a[1])?;
    let mut l = a[1];
    while let Some(p) = as_pair(l) {
        let x = [car(p)];
        apply(cx, a[0], &x)?;
        l = cdr(p);
    }
    Ok(VOID)
}

fn equal(a: Value, b: Value, depth: usize) -> bool {
    if a == b {
        return true;
    }
    if depth > 10_000 {
        return false;
    }
    match (a.kind(), b.kind()) {
        (Some(Kind::Pair), Some(Kind::Pair)) => {
            let (p, q) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            equal(car(p), car(q), depth + 1) && equal(cdr(p), cdr(q), depth + 1)
        }
        (Some(Kind::Str), Some(Kind::Str)) => string_str(a.as_ref().unwrap()) == string_str(b.as_ref().unwrap()),
        (Some(Kind::Vector), Some(Kind::Vector)) => {
            let (p, q) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            p.len() == q.len() && (0..p.len()).all(|i| equal(load(p, elem(i)), load(q, elem(i)), depth + 1))
        }
        _ => false,
    }
}

// ---- printing -------------------------------------------------------------------

/// Append the printed form of `v` to `out` (`write`: strings quoted).
pub fn print(interp: &Interp, v: Value, out: &mut String, write: bool, depth: usize) {
    use std::fmt::Write as _;
    if depth > 200 {
        out.push_str("...");
        return;
    }
    match v {
        NIL => out.push_str("()"),
        TRUE => out.push_str("#t"),
        FALSE => out.push_str("#f"),
        VOID => out.push_str("#<void>"),
        _ if v.is_fix() => {
            let _ = write!(out, "{}", v.as_fix());
        }
        _ if v.is_sym() => out.push_str(&interp.symbol_name(v.sym_id())),
        _ if v.is_prim() => {
            let _ = write!(out, "#<procedure {}>", PRIMS[v.prim_index()].name);
        }
        _ => match v.kind() {
            Some(Kind::Str) => {
                let s = string_str(v.as_ref().unwrap());
                if write {
                    let _ = write!(out, "{s:?}");
                } else {
                    out.push_str(s);
                }
            }
            Some(Kind::Pair) => {
                out.push('(');
                let mut l = v;
                let mut n = 0;
                while let Some(p) = as_pair(l) {
                    if n > 0 {
                        out.push(' ');
                    }
                    if n == 10_000 {
                        out.push_str("...");
                        l = NIL;
                        break;
                    }
                    print(interp, car(p), out, write, depth + 1);
                    l = cdr(p);
                    n += 1;
                }
                if l != NIL {
                    out.push_str(" . ");
                    print(interp, l, out, write, depth + 1);
                }
                out.push(')');
            }
            Some(Kind::Vector) => {
                let r = v.as_ref().unwrap();
                out.push_str("#(");
                for i in 0..r.len() {
                    if i > 0 {
                        out.push(' ');
                    }
                    print(interp, load(r, elem(i)), out, write, depth + 1);
                }
                out.push(')');
            }
            Some(Kind::Closure) => {
                let (lam, _) = closure_parts(v).unwrap();
                let _ = write!(out, "#<procedure {}>", lam.name);
            }
            Some(Kind::Channel) => out.push_str("#<channel>"),
            Some(Kind::Task) => out.push_str("#<task>"),
            Some(Kind::Frame) | None => out.push_str("#<object>"),
        },
    }
}

// ---- tasks and channels ---------------------------------------------------------

fn in_task(who: &str) -> R<()> {
    if usurp::task::id().is_none() {
        return err(format!("{who}: needs the usurp task runtime"));
    }
    Ok(())
}

/// `(spawn f arg ...)`: run `(f arg ...)` in a new usurp task. The callee
/// and arguments travel to the new task in precise roots (a Rust closure
/// is heap memory the collector does not scan).
fn spawn(cx: &Ctx, a: &[Value]) -> R<Value> {
    in_task("spawn")?;
    if !a[0].is_prim() && closure_parts(a[0]).is_none() {
        return type_error(cx, "spawn", "a procedure", a[0]);
    }
    let heap = &cx.interp.heap;
    let rooted: Vec<Rooted> = a.iter().map(|&v| Rooted::new(heap, v)).collect();
    let handle_obj = alloc(types().task)?;
    let interp = cx.interp.clone();
    cx.interp.live_tasks.fetch_add(1, Ordering::AcqRel);
    let h = usurp::task::Builder::new().spawn(move || {
        let cx = Ctx::new(interp.clone());
        let vals: Vec<Value> = rooted.iter().map(Rooted::get).collect();
        // `rooted` stays alive until the call returns: it keeps the
        // values in `vals` (Rust heap) alive.
        let r = apply(&cx, vals[0], &vals[1..]);
        drop(rooted);
        cx.flush();
        let out = match r {
            Ok(v) => Ok(Rooted::new(&interp.heap, v)),
            Err(e) if e.0 == super::eval::CANCELLED => Err(e.0),
            Err(e) => {
                interp.task_failed.store(true, Ordering::Release);
                interp.report_task_error(&e.0);
                Err(e.0)
            }
        };
        // Last: nothing of this task touches the heap after this.
        interp.live_tasks.fetch_sub(1, Ordering::AcqRel);
        out
    });
    let h = match h {
        Ok(h) => h,
        Err(e) => {
            cx.interp.live_tasks.fetch_sub(1, Ordering::AcqRel);
            return err(format!("spawn: {e}"));
        }
    };
    let mut t = cx.interp.tasks.lock().unwrap_or_else(|e| e.into_inner());
    handle_obj.set_word(0, t.len());
    t.push(Some(h));
    Ok(Value::obj(handle_obj))
}

/// `(join task)`: wait for the task and return its value.
fn join(cx: &Ctx, a: &[Value]) -> R<Value> {
    in_task("join")?;
    if a[0].kind() != Some(Kind::Task) {
        return type_error(cx, "join", "a task", a[0]);
    }
    let i = a[0].as_ref().unwrap().word(0);
    let h = cx.interp.tasks.lock().unwrap_or_else(|e| e.into_inner())[i].take();
    let Some(h) = h else { return err("join: task already joined") };
    match h.join() {
        Ok(Ok(r)) => {
            let v = r.get();
            drop(r);
            Ok(v)
        }
        Ok(Err(e)) => {
            // Joined: the failure is reported here rather than at exit.
            err(format!("in spawned task: {e}"))
        }
        Err(_) => err("join: the task panicked"),
    }
}

fn make_channel(cx: &Ctx, _: &[Value]) -> R<Value> {
    in_task("make-channel")?;
    let obj = alloc(types().channel)?;
    let (tx, rx) = usurp::channel();
    let mut t = cx.interp.channels.lock().unwrap_or_else(|e| e.into_inner());
    obj.set_word(0, t.len());
    t.push(Arc::new(Chan { tx, rx: usurp::Mutex::new(rx) }));
    Ok(Value::obj(obj))
}

fn chan(cx: &Ctx, who: &str, v: Value) -> R<Arc<Chan>> {
    if v.kind() != Some(Kind::Channel) {
        return type_error(cx, who, "a channel", v);
    }
    let i = v.as_ref().unwrap().word(0);
    Ok(cx.interp.channels.lock().unwrap_or_else(|e| e.into_inner())[i].clone())
}

/// `(send ch v)`: the value waits in the channel's buffer (Rust heap) held
/// by a `Root`, dropped by the receiver.
fn send(cx: &Ctx, a: &[Value]) -> R<Value> {
    let c = chan(cx, "send", a[0])?;
    let r = Rooted::new(&cx.interp.heap, a[1]);
    c.tx.send(r).map_err(|_| LispError("send: channel closed".into()))?;
    Ok(VOID)
}

fn recv(cx: &Ctx, a: &[Value]) -> R<Value> {
    let c = chan(cx, "recv", a[0])?;
    let r = c.rx.lock().recv().map_err(|_| LispError("recv: channel closed".into()))?;
    let v = r.get();
    drop(r);
    Ok(v)
}

fn heap_stats(cx: &Ctx, _: &[Value]) -> R<Value> {
    let s = cx.interp.heap.stats();
    let mut b = ListBuilder::new();
    for (k, v) in [
        ("cycles", s.cycles as i64),
        ("live", s.heap_live as i64),
        ("alloc", s.heap_alloc as i64),
        ("limit", s.heap_limit as i64),
        ("bad-pointers", s.bad_pointers as i64),
        ("bad-values", s.bad_values as i64),
        ("verify-failures", s.verify_failures as i64),
    ] {
        let key = Value::sym(cx.interp.intern(k)?);
        let e = cons(key, Value::fix(v))?;
        b.push(e)?;
    }
    Ok(b.head)
}
