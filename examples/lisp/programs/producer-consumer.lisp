;; producer-consumer.lisp: producers send heap values (lists holding
;; strings) over a channel; consumers add them up, forcing collections
;; while values are in flight; the totals come back over a second channel.

(define n (scale 3000))
(define producers 3)
(define consumers 2)
(define work (make-channel))
(define results (make-channel))

(define (producer id)
  (let loop ((i 0))
    (when (< i n)
      (send work (list id i (number->string i)))
      (when (= 0 (remainder i 64)) (yield))
      (loop (+ i 1))))
  id)

(define (consumer id)
  (let loop ((count 0) (sum 0))
    (let ((m (recv work)))
      (if (eq? m 'stop)
          (send results (cons count sum))
          (begin
            (when (= 0 (remainder count 1000)) (gc))
            (loop (+ count 1)
                  (+ sum (car (cdr m)) (string-length (car (cdr (cdr m)))))))))))

(define cs (let loop ((k 0) (acc '()))
             (if (= k consumers) acc (loop (+ k 1) (cons (spawn consumer k) acc)))))
(define ps (let loop ((k 0) (acc '()))
             (if (= k producers) acc (loop (+ k 1) (cons (spawn producer k) acc)))))
(for-each join ps)
(let loop ((k 0)) (when (< k consumers) (send work 'stop) (loop (+ k 1))))
(define totals
  (let loop ((k 0) (count 0) (sum 0))
    (if (= k consumers)
        (cons count sum)
        (let ((r (recv results)))
          (loop (+ k 1) (+ count (car r)) (+ sum (cdr r)))))))
(for-each join cs)
(display "messages: ") (display (car totals)) (newline)
(display "sum: ") (display (cdr totals)) (newline)
