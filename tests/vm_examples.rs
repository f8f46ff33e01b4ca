//! The example Lisp VM (examples/lisp): its programs run in-process on a
//! fresh usurp runtime each, with output captured and compared exactly.
//! Loop counts shrink with USURP_TEST_SCALE (passed to the programs as
//! `(scale n)`); the expected numbers are computed here for that scale.

#[path = "../examples/lisp/vm.rs"]
mod vm;

use std::sync::Arc;
use std::time::Duration;

fn scale_f() -> f64 {
    std::env::var("USURP_TEST_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0)
}

/// `(scale n)` as the interpreter computes it.
fn scale(n: i64) -> i64 {
    ((n as f64 * scale_f()) as i64).max(1)
}

fn opts() -> vm::Options {
    vm::Options {
        workers: 2,
        quantum: Duration::from_millis(2),
        heap_limit: 256 << 20,
        scale: scale_f(),
        ..Default::default()
    }
}

fn run_with(src: &str, o: vm::Options) -> (Result<(), String>, String) {
    let sink = Arc::new(vm::Sink::Capture(Default::default()));
    let r = vm::run_program(src, o, sink.clone());
    (r, sink.captured())
}

fn run(src: &str) -> (Result<(), String>, String) {
    run_with(src, opts())
}

#[allow(dead_code)] // used by the program tests once tasks can allocate
fn program(name: &str) -> String {
    let p = format!("{}/examples/lisp/programs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn core_language() {
    let (r, out) = run(r#"
        (define (fact n) (if (= n 0) 1 (* n (fact (- n 1)))))
        (display (fact 19)) (newline)
        (define (f a . rest) (list a rest))
        (display (f 1 2 3)) (newline)
        (display (let loop ((i 0) (acc '())) (if (= i 5) (reverse acc) (loop (+ i 1) (cons (* i i) acc))))) (newline)
        (display (let* ((a 1) (b (+ a 1))) (cond ((> a b) 'no) ((= b 2) 'yes) (else 'never)))) (newline)
        (define v (make-vector 3 0)) (vector-set! v 1 "s") (write v) (newline)
        (display (string-append "n=" (number->string -42) "/" (symbol->string 'sym))) (newline)
        (display (map (lambda (x) (* x 10)) '(1 2 3))) (newline)
        (display (append '(1 2) '(3) '() '(4 . 5))) (newline)
        (display (list (quotient -7 2) (remainder -7 2) (modulo -7 2) (max 1 5 3) (abs -3))) (newline)
        (define (even2? n) (if (= n 0) #t (odd2? (- n 1))))
        (define (odd2? n) (if (= n 0) #f (even2? (- n 1))))
        (display (even2? 100001)) (newline)
        (define (g) (define x 1) (define (h) (+ x 1)) (set! x 10) (h))
        (display (g)) (newline)
        (display (letrec ((e? (lambda (n) (if (= n 0) #t (o? (- n 1))))) (o? (lambda (n) (if (= n 0) #f (e? (- n 1)))))) (e? 10))) (newline)
        (display (and 1 2 #f 3)) (display (or #f 7)) (display (and)) (newline)
        (display (equal? (list 1 "a" (vector 2)) (list 1 "a" (vector 2)))) (display (eq? 'a 'a)) (newline)
        (display (apply + 1 '(2 3))) (newline)
    "#);
    assert_eq!(r, Ok(()));
    assert_eq!(
        out,
        "121645100408832000\n(1 (2 3))\n(0 1 4 9 16)\nyes\n#(0 \"s\" 0)\nn=-42/sym\n(10 20 30)\n(1 2 3 4 . 5)\n\
         (-3 -1 1 5 3)\n#f\n11\n#t\n#f7#t\n#t#t\n6\n"
    );
}

#[test]
fn guest_errors_are_reported_not_panics() {
    let cases: &[(&str, &str)] = &[
        ("(display 1)\n(display (+ 1 2)\n", "parse error at line 2: unclosed parenthesis"),
        ("(display 1))", "parse error at line 1: unexpected `)`"),
        ("\n\n\"abc", "parse error at line 3: unterminated string"),
        ("(define x 1)\n(display y)", "line 2: unbound variable: y"),
        ("(car 5)", "line 1: car: expected a pair, got 5"),
        ("(+ 1 \"a\")", "+: expected an integer, got a string"),
        ("(define (f x) x)\n\n(f 1 2)", "line 3: f: expects 1 arguments, got 2"),
        ("(vector-ref (vector 1) 3)", "vector-ref: index 3 out of range"),
        ("(quotient 1 0)", "quotient: division by zero"),
        ("(* 4611686018427387 4611686018427387)", "*: integer overflow"),
        ("(5 1)", "not a procedure: 5"),
        ("(error \"custom failure:\" 'x 42)", "custom failure: x 42"),
        ("(define (down n) (+ 1 (down n)))\n(down 1)", "recursion too deep"),
        ("(if)", "line 1: if takes 2 or 3 forms"),
        ("(let ((x)) x)", "line 1: a binding must be (name value)"),
        ("(set! undefined-thing 1)", "unbound variable: undefined-thing"),
        ("(make-vector 1000000000000)", "make-vector: length too large"),
    ];
    for (src, want) in cases {
        let (r, _) = run(src);
        let e = r.expect_err(src);
        assert!(e.contains(want), "{src:?}: error {e:?} does not contain {want:?}");
    }
}

#[test]
fn output_before_an_error_is_kept() {
    let (r, out) = run("(display \"before\") (newline) (display \"partial\") (car '())");
    assert!(r.unwrap_err().contains("car: expected a pair, got ()"));
    assert_eq!(out, "before\npartial");
}

#[test]
fn heap_exhaustion_is_a_guest_error() {
    let o = vm::Options { heap_limit: 4 << 20, ..opts() };
    let (r, _) = run_with("(define (grow l) (grow (cons (make-vector 100 0) l))) (grow '())", o);
    let e = r.unwrap_err();
    assert!(e.contains("out of memory") && e.contains("heap limit"), "{e}");
}

#[test]
fn garbage_is_collected_and_live_data_survives() {
    // Lists built and dropped while a global structure must survive every
    // collection; the heap stays far below what was allocated in total.
    let rounds = scale(200);
    let src = format!(
        r#"
        (define keep (let loop ((i 0) (acc '())) (if (= i 1000) acc (loop (+ i 1) (cons (number->string i) acc)))))
        (define (total l) (if (null? l) 0 (+ (string-length (car l)) (total (cdr l)))))
        (define want (total keep))
        (let loop ((r 0))
          (when (< r {rounds})
            (let build ((i 0) (acc '())) (if (= i 5000) acc (build (+ i 1) (cons (vector i i) acc))))
            (loop (+ r 1))))
        (gc)
        (display (= want (total keep))) (newline)
        (define s (heap-stats))
        (display (> (cdr (assq 'cycles s)) 0)) (newline)
        (display (< (cdr (assq 'live s)) 4000000)) (newline)
        (display (cdr (assq 'bad-pointers s))) (newline)
        (display (cdr (assq 'verify-failures s))) (newline)
    "#
    );
    let (r, out) = run(&src);
    assert_eq!(r, Ok(()));
    assert_eq!(out, "#t\n#t\n#t\n0\n0\n");
}
