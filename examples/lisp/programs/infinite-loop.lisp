;; infinite-loop.lisp: one task spins forever in a loop that never yields
;; by itself; the others sleep, print progress and finish, and a forced
;; collection (which stops the world, spinner included) completes. The
;; program ends when the main task does; the spinner is abandoned.

(define spinner (spawn (lambda () (let loop () (loop)))))

(define (worker id)
  (let loop ((i 0))
    (when (< i 3)
      (sleep 5)
      (loop (+ i 1))))
  (* id 10))

(define ws (map (lambda (id) (spawn worker id)) '(1 2 3)))
(display "workers returned ") (display (map join ws)) (newline)
(gc)
(display "a collection stopped the world, spinner included") (newline)
(display "others finished while the spinner spun") (newline)
