//! Stacks and registers of the collecting thread.
//!
//! The collector's own callee-saved registers may hold the only copy of a
//! pointer (pitfall 4): a collection runs inside `with_registers_spilled`, and
//! the collecting thread's stack is scanned from the spilled registers up to
//! the top of the stack it runs on.

use std::cell::Cell;

/// Push the callee-saved registers onto the stack, then call `f(sp)`; every
/// word from `sp` up to the top of the current stack is then scannable
/// (pitfall 4: the collector's own registers count too). The arch crate's
/// routine; `f` must not panic (the asm frame does not unwind).
#[inline(never)]
pub fn with_registers_spilled(f: &mut dyn FnMut(usize)) {
    crate::arch::with_registers_spilled(f)
}

thread_local! {
    static BOUNDS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// `[lo, hi)` of the current OS thread's stack (from `pthread_getattr_np`,
/// cached per thread). `(0, 0)` if unknown.
pub fn os_thread_stack_bounds() -> (usize, usize) {
    let cached = BOUNDS.with(|b| b.get());
    if cached.1 != 0 {
        return cached;
    }
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: pthread_getattr_np initialises attr on success; we read the stack
    // and destroy the attr only in that case.
    let bounds = unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return (0, 0);
        }
        let rc = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        if rc != 0 {
            return (0, 0);
        }
        (addr as usize, addr as usize + size)
    };
    BOUNDS.with(|b| b.set(bounds));
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_sp_is_inside_our_stack() {
        let local = 5usize;
        let here = &local as *const usize as usize;
        let (lo, hi) = os_thread_stack_bounds();
        assert!(lo < here && here < hi, "{lo:#x} {here:#x} {hi:#x}");
        let mut got = 0;
        with_registers_spilled(&mut |sp| got = sp);
        assert!(lo < got && got < here);
    }
}
