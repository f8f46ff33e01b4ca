//! `lisp`: a small Scheme-flavoured Lisp whose interpreter runs on usurp
//! tasks (see `vm.rs` for the design).
//!
//! ```text
//! cargo run --release --example lisp -- FILE.lisp [--workers N] [--quantum-us U] [--heap-limit-mb M]
//! ```
//! Exit status 0 on success; 1 with a message on stderr for any guest error
//! (parse errors with line numbers, unbound variables, type errors, heap
//! exhaustion); 2 for bad command-line arguments.
//!
//! `--stats` prints preemption and GC counters at exit. Two mechanisms keep
//! a spinning guest from starving the others; try them with
//! `programs/infinite-loop.lisp --workers 1`:
//! * `--no-checkpoints`: the eval loop stops polling `checkpoint()`; only
//!   asynchronous preemption (timer signals) interrupts the spinner — and
//!   the program still finishes.
//! * `USURP_DEBUG=asyncpreemptoff=1`: timer ticks still come but every
//!   asynchronous attempt is refused; the refusal sets the checkpoint flag
//!   and the eval loop yields at its next call — the program finishes too.
//! * `--cooperative`: no signals at all (`Builder::async_preemption(false)`,
//!   `checkpoint()` is then a no-op): the spinner keeps its worker and the
//!   stop-the-world of `(gc)` waits for it forever, as in Go before 1.14.

mod vm;

use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "usage: lisp FILE.lisp [--workers N] [--quantum-us U] [--heap-limit-mb M] [--scale F]
                 [--stats] [--no-checkpoints] [--cooperative]";

fn parse_args() -> Result<(String, vm::Options), String> {
    let mut opts = vm::Options::default();
    let mut file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<f64, String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse::<f64>().ok().filter(|x| x.is_finite() && *x > 0.0).ok_or_else(|| format!("{name}: {v:?} is not a positive number"))
        };
        match a.as_str() {
            "--workers" => opts.workers = num("--workers")? as usize,
            "--quantum-us" => opts.quantum = Duration::from_micros(num("--quantum-us")? as u64),
            "--heap-limit-mb" => opts.heap_limit = (num("--heap-limit-mb")? * 1048576.0) as usize,
            "--scale" => opts.scale = num("--scale")?,
            "--stats" => opts.print_stats = true,
            "--no-checkpoints" => opts.checkpoints = false,
            "--cooperative" => opts.async_preemption = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ if file.is_none() => file = Some(a),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    Ok((file.ok_or("no program file given")?, opts))
}

fn main() {
    let (file, opts) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("lisp: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let src = match std::fs::read_to_string(&file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lisp: cannot read {file}: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = vm::run_program(&src, opts, Arc::new(vm::Sink::Stdout)) {
        eprintln!("lisp: {file}: {e}");
        std::process::exit(1);
    }
}
