;; fib.lisp: closures, recursion, strings, and the same work spread over tasks.
;; (scale n) shrinks the work when the test suite runs under emulation.

(define (fib n)
  (if (< n 2)
      n
      (+ (fib (- n 1)) (fib (- n 2)))))

(define n (+ 10 (scale 12)))

;; Sequential.
(display (string-append "fib(" (number->string n) ") = " (number->string (fib n))))
(newline)

;; Closures sharing mutable state.
(define (make-counter)
  (let ((count 0))
    (lambda () (set! count (+ count 1)) count)))
(define c (make-counter))
(c) (c)
(display "counter: ") (display (c)) (newline)

;; Parallel: one task per argument, joined in order.
(define tasks (map (lambda (k) (spawn fib k)) (list (- n 3) (- n 2) (- n 1) n)))
(display "in tasks: ") (display (map join tasks)) (newline)

;; A tail-recursive loop runs in constant stack.
(define (count-up i limit acc)
  (if (= i limit) acc (count-up (+ i 1) limit (+ acc i))))
(display "sum below 100000: ") (display (count-up 0 100000 0)) (newline)
