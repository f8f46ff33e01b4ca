//! ucontext accessors and the injection of the spill routine, for the
//! preemption signal handler. Nothing here allocates, locks or panics.
//!
//! # The injection scheme
//!
//! A call on aarch64 writes the link register x30, so "making the thread
//! call the spill routine" the way x86-64 pushes a return address would lose
//! the interrupted LR (Go pushes LR onto the stack and sets LR = PC for this
//! reason). We go one step further and change NO register but SP and PC:
//! the handler writes everything the kernel told it about the interrupted
//! state and that the spill routine cannot recompute into a [`SpillFrame`]
//! below the interrupted SP, and returns into the routine with SP at the
//! frame's base:
//!
//! ```text
//!   S = interrupted SP            (Linux/aarch64 has no red zone: the
//!   F = (S - 4688) & !15           bytes below S are free; F is 16-aligned
//!                                  even if S was not)
//!   [F, F+16)   frame record {x29, pc} (interrupted values)
//!   F+16        magic
//!   F+128..     ucontext: uc_stack, uc_sigmask copied from the handler's
//!               ucontext (the state at the interruption; the spill routine
//!               refreshes both before its rt_sigreturn), sp = S, pc, pstate
//!               (full interrupted PSTATE, incl. BTYPE), fpsimd record header,
//!               terminating null record
//!   uc.sp = F, uc.pc = spill routine, uc.pstate.BTYPE = 0
//! ```
//!
//! Proof that nothing is lost: when the handler returns, the kernel restores
//! x0–x30, NZCV, FPSR, FPCR and v0–v31 from the handler's ucontext, which we
//! left untouched, so the routine starts with every register the interrupted
//! code had, except SP (the original value is in the frame) and PC (likewise).
//! The routine stores x0–x30, NZCV, FPSR, FPCR and q0–q31 before it changes
//! any of them. Everything it stores or we prefilled lies in [F, S), above the
//! routine's SP, so a signal taken meanwhile (its frame goes below SP) cannot
//! overwrite it. BTYPE is cleared for the jump into the routine (the kernel
//! does the same for handler entry) and restored with the rest of PSTATE.
//!
//! Precondition (documented on `inject_spill`, checked by the preemption
//! crate, which refuses with `HandlerOnTaskStack` when the ucontext lies on
//! the task's stack): the handler runs on an alternate signal stack, so
//! [F, S) does not overlap the handler's own frame.

use crate::frame::{SpillFrame, MAX_SVE_RECORD, OFF_END_RECORD, OFF_FPSIMD, SPILL_FRAME_SIZE, SPILL_MAGIC};
use crate::layout::*;
use core::ffi::c_void;
use core::mem::size_of;
use core::ptr::{addr_of, addr_of_mut};

/// The interrupted program counter.
///
/// # Safety
/// `uc` must be the `ucontext_t*` the kernel passed to an `SA_SIGINFO` handler
/// (or point to memory laid out like one).
pub unsafe fn pc(uc: *const c_void) -> usize {
    // SAFETY: per the contract, `uc` points to a kernel ucontext.
    unsafe { (*(uc as *const UContext)).uc_mcontext.pc as usize }
}

/// The interrupted stack pointer.
///
/// # Safety
/// As for [`pc`].
pub unsafe fn sp(uc: *const c_void) -> usize {
    // SAFETY: per the contract, `uc` points to a kernel ucontext.
    unsafe { (*(uc as *const UContext)).uc_mcontext.sp as usize }
}

/// The interrupted frame pointer x29.
///
/// # Safety
/// As for [`pc`].
pub unsafe fn fp(uc: *const c_void) -> usize {
    // SAFETY: per the contract, `uc` points to a kernel ucontext.
    unsafe { (*(uc as *const UContext)).uc_mcontext.regs[29] as usize }
}

/// The interrupted link register x30.
///
/// # Safety
/// As for [`pc`].
pub unsafe fn lr(uc: *const c_void) -> usize {
    // SAFETY: per the contract, `uc` points to a kernel ucontext.
    unsafe { (*(uc as *const UContext)).uc_mcontext.regs[30] as usize }
}

/// Interrupted general register xN (N in 0..=30; 31 gives SP).
///
/// # Safety
/// As for [`pc`].
pub unsafe fn reg(uc: *const c_void, n: usize) -> usize {
    // SAFETY: per the contract, `uc` points to a kernel ucontext.
    let mc = unsafe { &(*(uc as *const UContext)).uc_mcontext };
    if n < 31 {
        mc.regs[n] as usize
    } else {
        mc.sp as usize
    }
}

/// Sets the PC at which the interrupted code resumes (used to back a
/// restartable sequence up to its start before injecting the spill).
///
/// # Safety
/// As for [`pc`]; `new_pc` must be a valid resumption point for the
/// interrupted register state.
pub unsafe fn set_pc(uc: *mut c_void, new_pc: usize) {
    // SAFETY: per the contract, `uc` points to a kernel ucontext.
    unsafe { (*(uc as *mut UContext)).uc_mcontext.pc = new_pc as u64 }
}

/// Rewrites the context so that returning from the handler enters the spill
/// routine with every register of the interrupted code intact (see the
/// module comment for the scheme and its proof). The routine then saves
/// everything into a [`SpillFrame`] at `(sp - 4688) & !15`, calls the hook
/// installed with [`crate::set_spill_hook`], and on the hook's return
/// resumes the interrupted code exactly (through `rt_sigreturn`).
///
/// # Safety
/// * `uc` is the ucontext of the running `SA_SIGINFO` handler, which
///   interrupted user code of this thread.
/// * The handler runs on an alternate signal stack (`SA_ONSTACK` +
///   `sigaltstack`), or anywhere else outside `[sp - spill_stack_needed(), sp)`.
/// * The caller checked that `[sp - spill_stack_needed(), sp)` is mapped,
///   writable, and not used by anything else (the task's own stack).
/// * A hook is installed, it returns (if ever) on the same OS thread, and the
///   interrupted code does not rely on state the frame does not hold (see
///   [`vector_state`]: SME streaming mode/ZA, a shadow stack).
#[cfg(target_arch = "aarch64")]
pub unsafe fn inject_spill(uc: *mut c_void) {
    // SAFETY: forwarded; the routine is the matching entry point.
    unsafe { inject_spill_to(uc, crate::spill::spill_routine_address()) };
}

/// `inject_spill` with an explicit entry address (portable, for tests on
/// any host). Returns the frame base F.
///
/// # Safety
/// As for `inject_spill`.
pub unsafe fn inject_spill_to(uc: *mut c_void, entry: usize) -> usize {
    let uc = uc as *mut UContext;
    // SAFETY: `uc` is a valid ucontext (contract); the region [F, S) is free
    // task stack (contract) and F is 16-aligned, so the frame pointer is
    // aligned for SpillFrame. We write through raw pointers only.
    unsafe {
        let mc = addr_of_mut!((*uc).uc_mcontext);
        let s = (*mc).sp as usize;
        // wrapping: a handler must not panic (the caller checked the room).
        let f = s.wrapping_sub(SPILL_FRAME_SIZE) & !15;
        let fr = f as *mut SpillFrame;
        let pc = (*mc).pc;
        addr_of_mut!((*fr).record).write([(*mc).regs[29], pc]);
        addr_of_mut!((*fr).magic).write(SPILL_MAGIC);
        let fuc = addr_of_mut!((*fr).uc);
        addr_of_mut!((*fuc).uc_flags).write(0);
        addr_of_mut!((*fuc).uc_link).write(0);
        addr_of_mut!((*fuc).uc_stack).write(addr_of!((*uc).uc_stack).read());
        addr_of_mut!((*fuc).uc_sigmask).write(addr_of!((*uc).uc_sigmask).read());
        let fmc = addr_of_mut!((*fuc).uc_mcontext);
        addr_of_mut!((*fmc).fault_address).write(0);
        addr_of_mut!((*fmc).sp).write(s as u64);
        addr_of_mut!((*fmc).pc).write(pc);
        addr_of_mut!((*fmc).pstate).write((*mc).pstate);
        let base = f as *mut u8;
        (base.add(OFF_FPSIMD) as *mut CtxHeader).write(CtxHeader {
            magic: FPSIMD_MAGIC,
            size: size_of::<FpsimdContext>() as u32,
        });
        // Live SVE state (Z above 128 bits, P0-P15, FFR): carry the kernel's
        // record verbatim, so that rt_sigreturn reloads it (issue 12,
        // finding 1). The low 128 bits of each Z come from the fpsimd record
        // the spill routine fills (the kernel applies it after the SVE one).
        let v = scan_records(addr_of!((*uc).uc_mcontext.reserved.0) as *const u8, 4096);
        let mut end = OFF_END_RECORD;
        if v.sve_live && !v.streaming && v.sve_record != 0 && v.sve_size <= MAX_SVE_RECORD {
            core::ptr::copy_nonoverlapping(v.sve_record as *const u8, base.add(end), v.sve_size);
            end += v.sve_size;
        }
        (base.add(end) as *mut CtxHeader).write(CtxHeader { magic: 0, size: 0 });

        (*mc).sp = f as u64;
        (*mc).pc = entry as u64;
        (*mc).pstate &= !PSTATE_BTYPE;
        f
    }
}

/// What the kernel's signal frame says about vector and control-flow state
/// that a [`SpillFrame`] does not hold (see [`vector_state`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorState {
    /// An SVE record carries register payload: Z0–Z31 beyond bit 127,
    /// P0–P15 and FFR are live as far as the kernel knows (TIF_SVE).
    pub sve_live: bool,
    /// Where that record is (inside the kernel's frame), when `sve_live`.
    pub sve_record: usize,
    /// Its size in bytes (a multiple of 16), when `sve_live`.
    pub sve_size: usize,
    /// The thread was in SME streaming mode.
    pub streaming: bool,
    /// SME ZA (or ZT0) storage is enabled.
    pub za_live: bool,
    /// A guarded control stack (shadow stack) is enabled: our rt_sigreturn
    /// would not find the kernel's GCS token.
    pub gcs: bool,
    /// The record list could not be parsed (a size that is not a positive
    /// multiple of 16 or runs past the area, a runaway list).
    pub malformed: bool,
}

impl VectorState {
    /// State that resuming through a spill frame would lose or corrupt even
    /// for code compiled without SVE/SME: the preemption check must refuse.
    pub fn must_refuse(&self) -> bool {
        self.streaming || self.za_live || self.gcs || self.malformed || (self.sve_live && self.sve_size > MAX_SVE_RECORD)
    }
}

/// Scans the kernel's signal-frame records for state a [`SpillFrame`] does
/// not hold by itself.
///
/// Policy: live SVE state is carried, not refused. The frame keeps v0–v31
/// (the low 128 bits of Z0–Z31) in its fpsimd record, and when the kernel's
/// frame has an SVE record with payload, `inject_spill` copies it verbatim
/// after the fpsimd record, so rt_sigreturn reloads Z0–Z31, P0–P15 and FFR
/// (the kernel then applies the fpsimd record's V registers over the low
/// bits, which the spill routine saved at its entry). Without the copy the
/// kernel would resume through a frame without an SVE record and drop that
/// state, as at a syscall, and a loop compiled with +sve that keeps a
/// `whilelo` predicate across the back edge would be corrupted. Refused
/// ([`VectorState::must_refuse`]): an SVE record larger than
/// [`crate::MAX_SVE_RECORD`] (vector lengths above 768 bits), streaming
/// mode, ZA/ZT0 (which may belong to a caller under the SME lazy-save
/// scheme), a shadow stack (GCS), or a record list we cannot parse.
/// Resuming requires the thread's vector length to be unchanged (the kernel
/// rejects the frame otherwise): usurp never changes it, and a task that
/// calls `prctl(PR_SVE_SET_VL)` must do so inside a no-preempt section.
///
/// # Safety
/// `uc` must be the ucontext of the running `SA_SIGINFO` handler (records
/// referenced by an extra_context record are read where the kernel put them).
pub unsafe fn vector_state(uc: *const c_void) -> VectorState {
    let uc = uc as *const UContext;
    // SAFETY: `uc` is a valid ucontext (contract), so its __reserved area is
    // readable; extra_context points into the same signal frame.
    unsafe {
        let area = addr_of!((*uc).uc_mcontext.reserved.0) as *const u8;
        scan_records(area, 4096)
    }
}

/// Why the interrupted state cannot go through the spill frame (see
/// [`unsaveable`]). The same enum in both arch crates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsaveable {
    /// A shadow stack is active (aarch64: a guarded control stack, GCS): our
    /// rt_sigreturn would not find the kernel's GCS token.
    ShadowStack,
    /// Register state the spill frame does not keep: SME streaming mode,
    /// live ZA/ZT0, an SVE record too large for the frame, or a record list
    /// that could not be parsed ([`VectorState::must_refuse`]).
    VectorState,
}

/// Whether the thread interrupted with `uc` has state the spill routine
/// cannot save and restore exactly (from [`vector_state`]): a shadow stack
/// first, then register state. Live SVE state is saved and restored (the
/// spill frame carries a copy of the kernel's SVE record).
///
/// # Safety
/// As for [`vector_state`].
pub unsafe fn unsaveable(uc: *const c_void) -> Option<Unsaveable> {
    // SAFETY: forwarded; the scan reads only inside the kernel's frame.
    let v = unsafe { vector_state(uc) };
    if v.gcs {
        Some(Unsaveable::ShadowStack)
    } else if v.must_refuse() {
        Some(Unsaveable::VectorState)
    } else {
        None
    }
}

/// True if the kernel considers SVE/SME register state live (any of
/// `sve_live`, `streaming`, `za_live` of [`vector_state`]). See
/// [`vector_state`] for which of these the spill frame carries (SVE) and
/// which the preemption check refuses ([`VectorState::must_refuse`]).
///
/// # Safety
/// As for [`vector_state`].
pub unsafe fn has_live_sve(uc: *const c_void) -> bool {
    // SAFETY: forwarded.
    let v = unsafe { vector_state(uc) };
    v.sve_live || v.streaming || v.za_live
}

/// Walks a record list of at most `limit` bytes at `area` (16-aligned),
/// following one extra_context record. Bounded: at most 64 records.
///
/// # Safety
/// `[area, area + limit)` is readable, and so is the block an extra_context
/// record in it designates.
pub(crate) unsafe fn scan_records(area: *const u8, limit: usize) -> VectorState {
    let mut st = VectorState::default();
    let mut base = area;
    let mut limit = limit;
    let mut off = 0usize;
    let mut followed_extra = false;
    let mut extra: Option<(usize, usize)> = None;
    for _ in 0..64 {
        if limit - off < 8 {
            st.malformed = true;
            return st;
        }
        // SAFETY: off + 8 <= limit, inside the readable block.
        let head = unsafe { (base.add(off) as *const CtxHeader).read_unaligned() };
        let size = head.size as usize;
        if head.magic == 0 {
            if size != 0 {
                st.malformed = true;
                return st;
            }
            match extra.take() {
                Some((p, n)) if !followed_extra => {
                    followed_extra = true;
                    base = p as *const u8;
                    limit = n;
                    off = 0;
                    continue;
                }
                _ => return st,
            }
        }
        if size < 8 || size % 16 != 0 || size > limit - off {
            st.malformed = true;
            return st;
        }
        // The reads below: the record [off, off + size) lies inside the
        // block, and each read is within its first 32 bytes only when size
        // allows it.
        // SAFETY: as argued above (every caller passes an `o` inside the record).
        let rd16 = |o: usize| unsafe { (base.add(off + o) as *const u16).read_unaligned() };
        // SAFETY: as argued above (every caller passes an `o` inside the record).
        let rd64 = |o: usize| unsafe { (base.add(off + o) as *const u64).read_unaligned() };
        match head.magic {
            SVE_MAGIC if size >= 12 => {
                if rd16(10) & SVE_SIG_FLAG_SM != 0 {
                    st.streaming = true;
                }
                if head.size > SVE_EMPTY_RECORD_SIZE {
                    st.sve_live = true;
                    // SAFETY: inside the block (checked above).
                    st.sve_record = unsafe { base.add(off) } as usize;
                    st.sve_size = size;
                }
            }
            ZA_MAGIC if head.size > SVE_EMPTY_RECORD_SIZE => st.za_live = true,
            ZT_MAGIC => st.za_live = true,
            GCS_MAGIC if size >= 24 && rd64(16) & GCS_ENABLED != 0 => st.gcs = true,
            EXTRA_MAGIC if size >= 24 => {
                // struct extra_context { head; u64 datap; u32 size; u32 __reserved[3]; }
                let datap = rd64(8) as usize;
                let n = (rd64(16) & 0xffff_ffff) as usize;
                extra = Some((datap, n));
            }
            _ => {}
        }
        off += size;
    }
    st.malformed = true;
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{SpillFrame, SPILL_FRAME_SIZE};

    fn fake_uc() -> Box<UContext> {
        // SAFETY: UContext is plain old data; all-zero is a valid value.
        let mut uc: Box<UContext> = Box::new(unsafe { core::mem::zeroed() });
        for i in 0..31 {
            uc.uc_mcontext.regs[i] = 0x1000 + i as u64;
        }
        uc
    }

    #[repr(C, align(16))]
    struct Stack([u8; 16 * 1024]);

    #[test]
    fn injection_builds_frame_and_touches_only_sp_pc_btype() {
        let mut stack = Box::new(Stack([0xAA; 16 * 1024]));
        let top = stack.0.as_mut_ptr() as usize + stack.0.len();
        for misalign in [0usize, 8] {
            let mut uc = fake_uc();
            let s = top - 64 - misalign;
            uc.uc_mcontext.sp = s as u64;
            uc.uc_mcontext.pc = 0x4000_1234;
            uc.uc_mcontext.pstate = 0x6000_0400; // Z, C, BTYPE=1
            uc.uc_stack = StackT {
                ss_sp: 0x7777_0000,
                ss_flags: 0,
                _pad: 0,
                ss_size: 65536,
            };
            uc.uc_sigmask = 0x1234;
            let before = *uc;
            // SAFETY: `uc` is a fake ucontext; [s - needed, s) is our buffer.
            let f =
                unsafe { inject_spill_to(&mut *uc as *mut UContext as *mut c_void, 0xdead_0000) };
            assert_eq!(f % 16, 0);
            assert!(f + SPILL_FRAME_SIZE <= s && s - f < SPILL_FRAME_SIZE + 16);
            assert_eq!(uc.uc_mcontext.sp, f as u64);
            assert_eq!(uc.uc_mcontext.pc, 0xdead_0000);
            assert_eq!(uc.uc_mcontext.pstate, 0x6000_0000);
            assert_eq!(uc.uc_mcontext.regs, before.uc_mcontext.regs);
            // SAFETY: f is 16-aligned inside the buffer and was just written.
            let fr = unsafe { &*(f as *const SpillFrame) };
            assert!(fr.looks_valid());
            assert_eq!(fr.pc(), 0x4000_1234);
            assert_eq!(fr.sp(), s);
            assert_eq!(fr.record, [0x1000 + 29, 0x4000_1234]);
            assert_eq!(fr.pstate(), 0x6000_0400);
            assert_eq!(fr.uc.uc_stack.ss_sp, 0x7777_0000);
            assert_eq!(fr.uc.uc_sigmask, 0x1234);
            // Nothing at or above S was written.
            assert!(stack.0[s - stack.0.as_ptr() as usize..]
                .iter()
                .all(|&b| b == 0xAA));
        }
    }

    #[test]
    fn injection_carries_a_live_sve_record() {
        let mut stack = Box::new(Stack([0xAA; 16 * 1024]));
        let top = stack.0.as_mut_ptr() as usize + stack.0.len();
        for (size, carried) in [(16u32, false), (2208, true), (MAX_SVE_RECORD as u32, true), (MAX_SVE_RECORD as u32 + 16, false)] {
            let mut uc = fake_uc();
            let s = top - 64;
            uc.uc_mcontext.sp = s as u64;
            uc.uc_mcontext.pc = 0x4000_1234;
            let r = &mut uc.uc_mcontext.reserved.0;
            put(r, 0, FPSIMD_MAGIC, 528);
            put(r, 528, SVE_MAGIC, size);
            r[536..538].copy_from_slice(&64u16.to_le_bytes()); // vl
            for (i, b) in r[528 + 16..528 + size as usize].iter_mut().enumerate() {
                *b = (i * 7 + 3) as u8;
            }
            if 528 + size as usize + 8 <= r.len() {
                put(r, 528 + size as usize, 0, 0);
            }
            // SAFETY: a fake ucontext with a well-formed record list.
            let v = unsafe { vector_state(&*uc as *const UContext as *const c_void) };
            assert_eq!(v.must_refuse(), size as usize > MAX_SVE_RECORD, "size {size}");
            // SAFETY: `uc` is a fake ucontext; [s - needed, s) is our buffer.
            let f = unsafe { inject_spill_to(&mut *uc as *mut UContext as *mut c_void, 0xdead_0000) };
            // SAFETY: f is 16-aligned inside the buffer and was just written.
            let fr = unsafe { &*(f as *const SpillFrame) };
            assert!(fr.looks_valid(), "size {size}");
            let want = if carried { size as usize } else { 0 };
            assert_eq!(fr.sve_record_size(), want, "size {size}");
            let (lo, hi) = fr.saved_range();
            assert!(hi - lo >= OFF_END_RECORD + want + 8 && hi <= s);
            if carried {
                let copy = &fr.uc.uc_mcontext.reserved.0[528..528 + want];
                assert_eq!(copy, &uc.uc_mcontext.reserved.0[528..528 + want]);
            }
        }
    }

    fn put(area: &mut [u8], off: usize, magic: u32, size: u32) {
        area[off..off + 4].copy_from_slice(&magic.to_le_bytes());
        area[off + 4..off + 8].copy_from_slice(&size.to_le_bytes());
    }

    fn scan(area: &[u8]) -> VectorState {
        // SAFETY: the slice is readable; the tests use no extra_context
        // pointing outside it except where noted.
        unsafe { scan_records(area.as_ptr(), area.len()) }
    }

    #[test]
    fn record_scanner() {
        let mut a = vec![0u8; 4096];
        put(&mut a, 0, FPSIMD_MAGIC, 528);
        assert_eq!(scan(&a), VectorState::default());
        // Empty SVE record (not live), then ESR.
        put(&mut a, 528, SVE_MAGIC, 16);
        put(&mut a, 544, ESR_MAGIC, 16);
        assert_eq!(scan(&a), VectorState::default());
        // Live SVE payload.
        put(&mut a, 528, SVE_MAGIC, 16 + 32);
        put(&mut a, 576, 0, 0);
        let v = scan(&a);
        assert!(v.sve_live && !v.must_refuse());
        // Streaming flag.
        a[528 + 10] = 1;
        let v = scan(&a);
        assert!(v.streaming && v.must_refuse());
        a[528 + 10] = 0;
        // ZA live.
        put(&mut a, 576, ZA_MAGIC, 32);
        put(&mut a, 608, 0, 0);
        assert!(scan(&a).za_live);
        // GCS enabled.
        put(&mut a, 576, GCS_MAGIC, 32);
        a[576 + 16] = 1;
        assert!(scan(&a).gcs);
        // Malformed: size 0, size past the end, non-zero size on the null record.
        put(&mut a, 576, 0x1234, 0);
        assert!(scan(&a).malformed);
        put(&mut a, 576, 0x1234, 8000);
        assert!(scan(&a).malformed);
        put(&mut a, 576, 0, 8);
        assert!(scan(&a).malformed);
    }

    #[test]
    fn record_scanner_follows_extra_context() {
        let mut extra = vec![0u8; 256];
        put(&mut extra, 0, SVE_MAGIC, 64);
        let mut a = vec![0u8; 4096];
        put(&mut a, 0, FPSIMD_MAGIC, 528);
        put(&mut a, 528, EXTRA_MAGIC, 32);
        a[536..544].copy_from_slice(&(extra.as_ptr() as u64).to_le_bytes());
        a[544..548].copy_from_slice(&(extra.len() as u32).to_le_bytes());
        assert!(scan(&a).sve_live);
    }

    #[test]
    fn record_scanner_never_panics_on_garbage() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut a = vec![0u8; 4096];
        for _ in 0..2000 {
            for w in a.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            // Keep sizes small-ish so that lists are walked; never create an
            // extra_context record (its pointer would be garbage).
            for i in (0..4096).step_by(8) {
                if a[i..i + 4] == EXTRA_MAGIC.to_le_bytes() {
                    a[i] = 0;
                }
                a[i + 5] = 0;
                a[i + 6] = 0;
                a[i + 7] = 0;
            }
            let _ = scan(&a);
        }
    }
}
