//! Guest values and their heap layouts.
//!
//! A [`Value`] is one machine word:
//!
//! | low bits | meaning                                                    |
//! |----------|------------------------------------------------------------|
//! | `...1`   | fixnum (62-bit signed integer, `n << 1 | 1`), never boxed  |
//! | `..000`  | a GC object: the exact address of its start (never 0)      |
//! | `..010`  | a constant: `()`, `#f`, `#t`, the unspecified value       |
//! | `..100`  | a symbol (`id << 3`), interned in the `Interp`'s table     |
//! | `..110`  | a built-in procedure (`index << 3`)                        |
//!
//! Because a heap value *is* the object's address, a `Value` held in a Rust
//! local, a register or a `[Value; N]` on the task's stack keeps its object
//! alive through the collector's conservative stack scan: the interpreter
//! never roots its temporaries.
//!
//! The heap uses the same representation (issue 14): the runtime's heap is
//! created with [`ENCODING`] = `ValueEncoding::low_bits(7, 0)` — a word is a
//! pointer iff its low three bits are `000`, and then it is the object's
//! address (0 is null) — and every guest value stored in a heap object
//! takes one word, a *value slot* (`Descriptor::builder(n).value_at(i)`,
//! `array_builder(1).value_at(0)`). The collector decodes value slots with
//! the encoding: a fixnum, a constant, a symbol or a built-in is skipped,
//! a heap value is marked. Stores go through `GcRef::set_value` (the
//! value write barrier). A pair is a compact object (no header word, its
//! descriptor is its block's: `DescriptorBuilder::compact`), `[car, cdr]`:
//! 16 bytes (24 with a header; 48 with two-word value slots before the
//! encoding existed).
//!
//! Layouts are built at run time with `Descriptor::builder` /
//! `Descriptor::array_builder`, once per process ([`types`]), as a VM that
//! defines its classes while it runs would.

use std::sync::OnceLock;
use usurp::gc::{Descriptor, GcRef, ValueEncoding};

/// The heap's value encoding: pointers are the words whose low three bits
/// are 0 (see the module docs).
pub const ENCODING: ValueEncoding = ValueEncoding::low_bits(7, 0);

/// A guest value (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct Value(pub usize);

pub const NIL: Value = Value(0b0_0010);
pub const FALSE: Value = Value(0b0_1010);
pub const TRUE: Value = Value(0b1_0010);
pub const VOID: Value = Value(0b1_1010);

/// Fixnums are 62-bit: this range survives `n << 1` in an i64.
pub const FIX_MIN: i64 = -(1 << 61);
pub const FIX_MAX: i64 = (1 << 61) - 1;

impl Value {
    #[inline(always)]
    pub fn fix(n: i64) -> Value {
        debug_assert!((FIX_MIN..=FIX_MAX).contains(&n));
        Value(((n << 1) | 1) as usize)
    }
    #[inline(always)]
    pub fn is_fix(self) -> bool {
        self.0 & 1 == 1
    }
    #[inline(always)]
    pub fn as_fix(self) -> i64 {
        (self.0 as i64) >> 1
    }
    #[inline(always)]
    pub fn sym(id: u32) -> Value {
        Value(((id as usize) << 3) | 0b100)
    }
    #[inline(always)]
    pub fn is_sym(self) -> bool {
        self.0 & 7 == 0b100
    }
    #[inline(always)]
    pub fn sym_id(self) -> u32 {
        (self.0 >> 3) as u32
    }
    #[inline(always)]
    pub fn prim(i: usize) -> Value {
        Value((i << 3) | 0b110)
    }
    #[inline(always)]
    pub fn is_prim(self) -> bool {
        self.0 & 7 == 0b110
    }
    #[inline(always)]
    pub fn prim_index(self) -> usize {
        self.0 >> 3
    }
    #[inline(always)]
    pub fn bool(b: bool) -> Value {
        if b {
            TRUE
        } else {
            FALSE
        }
    }
    #[inline(always)]
    pub fn truthy(self) -> bool {
        self != FALSE
    }
    #[inline(always)]
    pub fn is_heap(self) -> bool {
        self.0 & 7 == 0 && self.0 != 0
    }
    #[inline(always)]
    pub fn obj(r: GcRef) -> Value {
        Value(r.addr())
    }
    /// The object of a heap value.
    #[inline(always)]
    pub fn as_ref(self) -> Option<GcRef> {
        if self.is_heap() {
            // SAFETY: heap values are only ever made from GcRefs of live
            // objects (`Value::obj`) and are kept alive by the stack scan or
            // by precise slots; see the module docs.
            unsafe { GcRef::from_addr(self.0) }
        } else {
            None
        }
    }
    /// The kind of heap object, if this is one.
    #[inline]
    pub fn kind(self) -> Option<Kind> {
        let r = self.as_ref()?;
        let t = types();
        let d = r.descriptor();
        Some(if std::ptr::eq(d, t.pair) {
            Kind::Pair
        } else if std::ptr::eq(d, t.string) {
            Kind::Str
        } else if std::ptr::eq(d, t.closure) {
            Kind::Closure
        } else if std::ptr::eq(d, t.vector) {
            Kind::Vector
        } else if std::ptr::eq(d, t.channel) {
            Kind::Channel
        } else if std::ptr::eq(d, t.task) {
            Kind::Task
        } else {
            Kind::Frame
        })
    }
}

/// The kinds of guest heap objects.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Pair,
    Str,
    Vector,
    Closure,
    Frame,
    Channel,
    Task,
}

/// The run-time descriptors of the guest heap objects.
pub struct Types {
    /// `[car, cdr]`: two value slots.
    pub pair: &'static Descriptor,
    /// Pointer-free word array: element 0 = byte length, then the bytes.
    /// Never scanned by marking.
    pub string: &'static Descriptor,
    /// Array of value slots.
    pub vector: &'static Descriptor,
    /// Environment frame: array of value slots; element 0 is the parent
    /// frame (a heap value, or 0), elements 1.. are the variables.
    pub frame: &'static Descriptor,
    /// `[code (address of the compiled `Lambda`, not a GC pointer), env ptr]`.
    pub closure: &'static Descriptor,
    /// `[index into the Interp's channel table]`: pointer-free.
    pub channel: &'static Descriptor,
    /// `[index into the Interp's task table]`: pointer-free.
    pub task: &'static Descriptor,
}

/// The descriptors, built at first use.
pub fn types() -> &'static Types {
    static T: OnceLock<Types> = OnceLock::new();
    T.get_or_init(|| {
        let b = |r: Result<&'static Descriptor, usurp::gc::DescriptorError>| r.expect("static layout is valid");
        Types {
            pair: b(Descriptor::builder(2).value_at(0).value_at(1).compact().name("lisp.pair").build()),
            string: b(Descriptor::array_builder(1).name("lisp.string").build()),
            vector: b(Descriptor::array_builder(1).value_at(0).name("lisp.vector").build()),
            frame: b(Descriptor::array_builder(1).value_at(0).name("lisp.frame").build()),
            closure: b(Descriptor::builder(2).pointer_at(1).name("lisp.closure").build()),
            channel: b(Descriptor::builder(1).name("lisp.channel").build()),
            task: b(Descriptor::builder(1).name("lisp.task").build()),
        }
    })
}

/// A guest error (reported to the user; never a Rust panic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LispError(pub String);

impl std::fmt::Display for LispError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub type R<T> = Result<T, LispError>;

#[cold]
#[inline(never)]
pub fn err<T>(msg: impl Into<String>) -> R<T> {
    Err(LispError(msg.into()))
}

// ---- allocation ---------------------------------------------------------------

#[cold]
#[inline(never)]
fn alloc_error(e: usurp::gc::AllocError) -> LispError {
    LispError(format!("out of memory: {e}"))
}

/// Allocate a fixed object (zeroed: every value slot reads as the
/// unspecified value until set).
pub fn alloc(d: &'static Descriptor) -> R<GcRef> {
    usurp::gc::try_alloc(d).map_err(alloc_error)
}

/// Allocate an array object of `len` elements.
pub fn alloc_array(d: &'static Descriptor, len: usize) -> R<GcRef> {
    usurp::gc::try_alloc_array(d, len).map_err(alloc_error)
}

// ---- value slots ----------------------------------------------------------------

/// Read the value slot at payload word `i`.
#[inline(always)]
pub fn load(obj: GcRef, i: usize) -> Value {
    match obj.value(i) {
        // Never written (a fresh object).
        0 => VOID,
        w => Value(w),
    }
}

/// Write the value slot at payload word `i`, through the value write
/// barrier (`GcRef::set_value`).
#[inline(always)]
pub fn store(obj: GcRef, i: usize, v: Value) {
    obj.set_value(i, v.0)
}

/// Payload index of array element `e` (payload word 0 is the array length).
#[inline(always)]
pub fn elem(e: usize) -> usize {
    1 + e
}

/// Payload index of a pair's car and cdr.
pub const CAR: usize = 0;
/// See [`CAR`].
pub const CDR: usize = 1;

// ---- pairs ------------------------------------------------------------------------

pub fn cons(a: Value, d: Value) -> R<Value> {
    let p = alloc(types().pair)?;
    store(p, CAR, a);
    store(p, CDR, d);
    Ok(Value::obj(p))
}

#[inline]
pub fn car(p: GcRef) -> Value {
    load(p, CAR)
}
#[inline]
pub fn cdr(p: GcRef) -> Value {
    load(p, CDR)
}

/// The pair behind `v`, if it is one.
#[inline]
pub fn as_pair(v: Value) -> Option<GcRef> {
    (v.kind() == Some(Kind::Pair)).then(|| v.as_ref().unwrap())
}

// ---- strings ----------------------------------------------------------------------

pub fn make_string(s: &str) -> R<Value> {
    let n = s.len();
    let r = alloc_array(types().string, 1 + n.div_ceil(8))?;
    r.set_word(1, n);
    // SAFETY: the object is new and not yet visible to any other task; it
    // is a pointer-free array (checked by array_bytes_mut).
    let bytes = unsafe { r.array_bytes_mut() };
    bytes[8..8 + n].copy_from_slice(s.as_bytes());
    Ok(Value::obj(r))
}

/// The text of a string object. Strings are immutable once built, so the
/// borrow is never raced; it is valid while `r` is alive (the caller keeps
/// `r` on its stack).
pub fn string_str<'a>(r: GcRef) -> &'a str {
    let n = r.word(1);
    // SAFETY: `r` is a string (pointer-free array) whose bytes were copied
    // from a &str when it was built and never change afterwards.
    let bytes = unsafe { r.array_bytes_mut() };
    std::str::from_utf8(&bytes[8..8 + n]).unwrap_or("<invalid utf-8>")
}

// ---- vectors and frames ------------------------------------------------------

pub fn make_vector(n: usize, fill: Value) -> R<Value> {
    let r = alloc_array(types().vector, n)?;
    if fill != VOID {
        for e in 0..n {
            store(r, elem(e), fill);
        }
    }
    Ok(Value::obj(r))
}

/// A frame of `nvars` variables under `parent`.
#[inline]
pub fn make_frame(nvars: usize, parent: Option<GcRef>) -> R<GcRef> {
    let f = alloc_array(types().frame, nvars + 1)?;
    if let Some(p) = parent {
        store(f, elem(0), Value::obj(p));
    }
    Ok(f)
}

#[inline(always)]
pub fn frame_parent(f: GcRef) -> Option<GcRef> {
    load(f, elem(0)).as_ref()
}
#[inline(always)]
pub fn frame_get(f: GcRef, i: usize) -> Value {
    load(f, elem(i + 1))
}
#[inline(always)]
pub fn frame_set(f: GcRef, i: usize, v: Value) {
    store(f, elem(i + 1), v)
}
