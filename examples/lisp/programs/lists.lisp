;; lists.lisp: a list-heavy workload on one task (the benchmark of issue 14):
;; build, map, filter, reverse, append and merge-sort lists of fixnums, and
;; check every result. Prints `ok` and a checksum.

(define rounds (scale 30))

(define (iota n)
  (let loop ((i n) (acc '()))
    (if (= i 0) acc (loop (- i 1) (cons i acc)))))

(define (filter p l)
  (let loop ((l l) (acc '()))
    (cond ((null? l) (reverse acc))
          ((p (car l)) (loop (cdr l) (cons (car l) acc)))
          (else (loop (cdr l) acc)))))

(define (sum l)
  (let loop ((l l) (s 0))
    (if (null? l) s (loop (cdr l) (+ s (car l))))))

(define (split l)
  (let loop ((l l) (a '()) (b '()))
    (if (null? l) (cons a b) (loop (cdr l) (cons (car l) b) a))))

(define (merge a b)
  (let loop ((a a) (b b) (acc '()))
    (cond ((null? a) (append (reverse acc) b))
          ((null? b) (append (reverse acc) a))
          ((< (car a) (car b)) (loop (cdr a) b (cons (car a) acc)))
          (else (loop a (cdr b) (cons (car b) acc))))))

(define (sort l)
  (if (or (null? l) (null? (cdr l)))
      l
      (let ((halves (split l)))
        (merge (sort (car halves)) (sort (cdr halves))))))

(define (sorted? l)
  (or (null? l) (null? (cdr l))
      (and (<= (car l) (cadr l)) (sorted? (cdr l)))))

(define (expect what got want)
  (unless (= got want)
    (error "checksum mismatch in" what got want))
  got)

(define (round r)
  (let* ((n 3000)
         (l (iota n))
         (sq (map (lambda (x) (remainder (* x 7919) 10007)) l))
         (ev (filter even? l))
         (both (append (reverse ev) sq))
         (s (sort both)))
    (expect 'iota (sum l) (quotient (* n (+ n 1)) 2))
    (expect 'even (length ev) (quotient n 2))
    (expect 'length (length s) (+ n (quotient n 2)))
    (unless (sorted? s) (error "not sorted"))
    (expect 'sorted-sum (sum s) (+ (sum ev) (sum sq)))))

(define total
  (let loop ((r 0) (t 0))
    (if (= r rounds) t (loop (+ r 1) (+ t (round r))))))

(display "ok ") (display total) (newline)
