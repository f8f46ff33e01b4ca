//! Tests of the classifier over instruction bytes assembled with iced-x86's
//! `code_asm`, and a property test over random bytes.

use iced_x86::code_asm::*;
use usurp_arch_x86_64::{classify, classify_with_prev, is_after_call, Verdict};

const IP: u64 = 0x7000_1000;

/// Assembles the instructions emitted by `f` at IP.
fn asm(f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.assemble(IP).unwrap()
}

fn verdict(bytes: &[u8]) -> Verdict {
    classify(bytes, IP as usize)
}

fn verdict_after(prev: &[u8], bytes: &[u8]) -> Verdict {
    classify_with_prev(prev, bytes, IP as usize)
}

#[test]
fn prologue_instructions_are_refused() {
    assert_eq!(verdict(&asm(|a| a.endbr64())), Verdict::InPrologue);
    assert_eq!(verdict(&asm(|a| a.push(rbp))), Verdict::InPrologue);
    assert_eq!(verdict(&asm(|a| a.mov(rbp, rsp))), Verdict::InPrologue);
    // The other encoding of mov rbp, rsp (8B /r instead of 89 /r).
    assert_eq!(verdict(&[0x48, 0x8B, 0xEC]), Verdict::InPrologue);
    // Followed by more code: only the first instruction matters.
    let body = asm(|a| {
        a.push(rbp)?;
        a.mov(rbp, rsp)
    });
    assert_eq!(verdict(&body), Verdict::InPrologue);
}

#[test]
fn returns_are_refused() {
    assert_eq!(verdict(&asm(|a| a.ret())), Verdict::InEpilogue);
    assert_eq!(verdict(&asm(|a| a.ret_1(16))), Verdict::InEpilogue);
    assert_eq!(verdict(&asm(|a| a.retf())), Verdict::InEpilogue);
    assert_eq!(verdict(&[0xF3, 0xC3]), Verdict::InEpilogue); // rep ret
}

#[test]
fn frame_teardown_instructions_themselves_are_accepted() {
    // Before `pop rbp` / `leave` execute, rbp still names the current frame.
    assert_eq!(verdict(&asm(|a| a.pop(rbp))), Verdict::Safe);
    assert_eq!(verdict(&asm(|a| a.leave())), Verdict::Safe);
}

#[test]
fn tail_calls_after_the_frame_is_popped_are_refused() {
    let jmp_direct = asm(|a| {
        let mut l = a.create_label();
        a.jmp(l)?;
        a.set_label(&mut l)?;
        a.nop()
    });
    let jmp_indirect = asm(|a| a.jmp(rax));
    let jmp_mem = asm(|a| {
        let mut l = a.create_label();
        a.jmp(qword_ptr(l))?;
        a.set_label(&mut l)?;
        a.nop()
    });
    let jcc = asm(|a| {
        let mut l = a.create_label();
        a.jne(l)?;
        a.set_label(&mut l)?;
        a.nop()
    });
    let pop_rbp = asm(|a| a.pop(rbp));
    let leave = asm(|a| a.leave());
    for j in [&jmp_direct, &jmp_indirect, &jmp_mem] {
        assert_eq!(verdict_after(&pop_rbp, j), Verdict::InEpilogue);
        assert_eq!(verdict_after(&leave, j), Verdict::InEpilogue);
        // Unknown predecessor: conservatively refused.
        assert_eq!(verdict(j), Verdict::InEpilogue);
        // A branch inside a function body (predecessor is not a frame pop).
        assert_eq!(verdict_after(&asm(|a| a.add(rax, 1)), j), Verdict::Safe);
    }
    assert_eq!(verdict_after(&pop_rbp, &jcc), Verdict::InEpilogue);
    assert_eq!(verdict_after(&asm(|a| a.cmp(rax, rcx)), &jcc), Verdict::Safe);
    assert_eq!(verdict(&jcc), Verdict::Safe);
}

#[test]
fn a_one_instruction_spin_loop_is_preemptible() {
    // `loop {}` compiles to `jmp .` preceded by ordinary code.
    let spin = asm(|a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    });
    assert_eq!(verdict_after(&asm(|a| a.mov(rax, rcx)), &spin), Verdict::Safe);
}

#[test]
fn system_calls_and_software_interrupts_are_refused() {
    assert_eq!(verdict(&asm(|a| a.syscall())), Verdict::Syscall);
    assert_eq!(verdict(&asm(|a| a.sysenter())), Verdict::Syscall);
    assert_eq!(verdict(&asm(|a| a.int(0x80))), Verdict::Syscall);
    assert_eq!(verdict(&asm(|a| a.int3())), Verdict::Syscall);
}

#[test]
fn undecodable_and_truncated_bytes_are_refused() {
    assert_eq!(verdict(&[]), Verdict::Undecodable);
    // `push es` does not exist in 64-bit mode.
    assert_eq!(verdict(&[0x06]), Verdict::Undecodable);
    // mov rax, imm64 cut short: the instruction extends past the region.
    let movabs = asm(|a| a.mov(rax, 0x1122_3344_5566_7788u64));
    assert_eq!(movabs.len(), 10);
    for n in 0..movabs.len() {
        assert_eq!(verdict(&movabs[..n]), Verdict::Undecodable, "prefix of {n} bytes");
    }
    assert_eq!(verdict(&movabs), Verdict::Safe);
    // 15 prefixes plus an opcode exceed the architectural limit.
    let mut too_long = vec![0x66u8; 15];
    too_long.push(0x90);
    assert_eq!(verdict(&too_long), Verdict::Undecodable);
}

#[test]
fn ordinary_instructions_are_accepted() {
    let cases: Vec<Vec<u8>> = vec![
        asm(|a| a.add(rax, 1)),
        asm(|a| a.mov(qword_ptr(rdi + 8), rax)),
        asm(|a| a.lock().cmpxchg(qword_ptr(rdi), rcx)),
        asm(|a| a.rep().movsb()),
        asm(|a| a.vaddps(ymm1, ymm2, ymm3)),
        asm(|a| a.imul_3(rax, rcx, 7)),
        asm(|a| a.pop(rbx)),
        asm(|a| a.push(rbx)),
        asm(|a| a.sub(rsp, 0x40)),
        asm(|a| a.mov(rax, rsp)),
        asm(|a| a.call(rax)),
        asm(|a| {
            let mut l = a.create_label();
            a.call(l)?;
            a.set_label(&mut l)?;
            a.nop()
        }),
        asm(|a| a.pause()),
        asm(|a| a.nop()),
    ];
    for c in &cases {
        assert_eq!(verdict(c), Verdict::Safe, "{c:02x?}");
    }
}

#[test]
fn only_the_first_instruction_is_examined() {
    // A safe instruction followed by a `ret` is still safe: the ret is not at pc.
    let code = asm(|a| {
        a.add(rax, 1)?;
        a.ret()
    });
    assert_eq!(verdict(&code), Verdict::Safe);
    // Long regions: classify looks at no more than MAX_INSN_LEN bytes.
    let mut long = asm(|a| a.nop());
    long.resize(4096, 0xCC);
    assert_eq!(verdict(&long), Verdict::Safe);
}

#[test]
fn return_addresses_after_calls_are_recognised() {
    let forms: Vec<Vec<u8>> = vec![
        asm(|a| {
            let mut l = a.create_label();
            a.call(l)?;
            a.set_label(&mut l)?;
            a.nop()
        })
        .split_last()
        .map(|(_, call)| call.to_vec())
        .unwrap(),
        asm(|a| a.call(rax)),
        asm(|a| a.call(r11)),
        asm(|a| {
            let mut l = a.create_label();
            a.call(qword_ptr(l))?;
            a.set_label(&mut l)?;
            a.nop()
        })
        .split_last()
        .map(|(_, call)| call.to_vec())
        .unwrap(),
        asm(|a| a.call(qword_ptr(rax + 0x100))),
        asm(|a| a.call(qword_ptr(r8 + rcx * 8 + 0x1234_5678))),
    ];
    for call in &forms {
        // Some unrelated code before the call.
        let mut code = asm(|a| {
            a.mov(rax, 0x1122_3344_5566_7788u64)?;
            a.add(rcx, rdx)
        });
        code.extend_from_slice(call);
        let ret = 0x4000_0000usize;
        assert!(is_after_call(&code, ret), "{call:02x?}");
        // Exactly the call bytes suffice too.
        assert!(is_after_call(call, ret));
    }
    let not_calls: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xE8],
        asm(|a| a.add(rax, 1)),
        asm(|a| a.mov(rax, 0x1122_3344_5566_7788u64)),
        asm(|a| a.jmp(rax)),
        asm(|a| a.ret()),
    ];
    for c in &not_calls {
        assert!(!is_after_call(c, 0x4000_0000), "{c:02x?}");
    }
}

/// xorshift64*: a small deterministic PRNG for the property test.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn scale() -> f64 {
    usurp_testsupport::scale_factor()
}

/// Two pages: the first readable, the second PROT_NONE; plus a PROT_NONE page
/// before the first. Slices placed flush against either end fault if the
/// classifier ever reads outside them.
struct Fenced {
    base: *mut u8,
    page: usize,
}

impl Fenced {
    fn new() -> Fenced {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: anonymous private mapping of 3 pages; checked below.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                3 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as *mut u8;
        // SAFETY: both pages are inside the mapping just created.
        unsafe {
            assert_eq!(libc::mprotect(base as *mut _, page, libc::PROT_NONE), 0);
            assert_eq!(libc::mprotect(base.add(2 * page) as *mut _, page, libc::PROT_NONE), 0);
        }
        Fenced { base, page }
    }
    /// The readable page.
    fn mid(&self) -> &[u8] {
        // SAFETY: the middle page is mapped read/write and owned by self.
        unsafe { core::slice::from_raw_parts(self.base.add(self.page), self.page) }
    }
    fn mid_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, with exclusive access through &mut self.
        unsafe { core::slice::from_raw_parts_mut(self.base.add(self.page), self.page) }
    }
}

impl Drop for Fenced {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.base as *mut _, 3 * self.page) };
    }
}

#[test]
fn random_bytes_never_panic_and_never_read_outside_the_slice() {
    let mut fence = Fenced::new();
    let page = fence.page;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let rounds = ((200_000.0 * scale()) as usize).max(1000);
    let mut seen = [0usize; 5];
    for _ in 0..rounds {
        let len = (rng.next() % 16) as usize; // 0..=15
        let plen = (rng.next() % 16) as usize;
        let pc = rng.next() as usize;
        let mid = fence.mid_mut();
        for b in mid.iter_mut().take(16) {
            *b = rng.next() as u8;
        }
        for b in mid.iter_mut().skip(page - 16) {
            *b = rng.next() as u8;
        }
        // `code` flush against the trailing guard page, `prev` flush against
        // the leading one.
        let code: &[u8] = &fence.mid()[page - len..];
        let prev: &[u8] = &fence.mid()[..plen];
        let v = classify_with_prev(prev, code, pc);
        let w = classify(code, pc);
        if v != w {
            // The predecessor only decides between Safe and InEpilogue (branches).
            assert!(matches!((v, w), (Verdict::Safe, Verdict::InEpilogue) | (Verdict::InEpilogue, Verdict::Safe)),
                "{code:02x?} after {prev:02x?}: {v:?} vs {w:?}");
        }
        seen[match w {
            Verdict::Safe => 0,
            Verdict::InPrologue => 1,
            Verdict::InEpilogue => 2,
            Verdict::Undecodable => 3,
            Verdict::Syscall => 4,
            // Exists for the shared interface; aarch64 only.
            Verdict::VectorExtension => panic!("{code:02x?}: VectorExtension on x86-64"),
        }] += 1;
        let _ = is_after_call(prev, pc);
        let _ = is_after_call(&fence.mid()[page - len..], pc);
        if len == 0 {
            assert_eq!(w, Verdict::Undecodable);
        }
    }
    // Random bytes hit both decodable and undecodable cases.
    assert!(seen[0] > 0 && seen[3] > 0, "{seen:?}");
}
