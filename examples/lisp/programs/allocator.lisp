;; allocator.lisp: several tasks build and drop lists, trees of vectors and
;; strings while collections are forced; every structure's checksum is
;; verified after it was built, and a long-lived tree is checked at the end.

(define rounds (scale 30))

(define (make-list-n n)
  (let loop ((i 0) (acc '()))
    (if (= i n) acc (loop (+ i 1) (cons i acc)))))

(define (list-sum l)
  (let loop ((l l) (s 0))
    (if (null? l) s (loop (cdr l) (+ s (car l))))))

;; A node is #(depth label left right); a leaf is a string.
(define (make-tree d)
  (if (= d 0)
      (number->string d)
      (vector d (string-append "node-" (number->string d)) (make-tree (- d 1)) (make-tree (- d 1)))))

;; Nodes plus the lengths of all labels.
(define (tree-check t)
  (if (string? t)
      (+ 1 (string-length t))
      (+ 1 (string-length (vector-ref t 1)) (tree-check (vector-ref t 2)) (tree-check (vector-ref t 3)))))

(define (expect what got want)
  (unless (= got want)
    (error "checksum mismatch in" what got want))
  got)

(define tree-want (tree-check (make-tree 10)))

(define (churn id)
  (let loop ((r 0) (total 0))
    (if (= r rounds)
        total
        (let* ((l (expect 'list (list-sum (make-list-n 2000)) 1999000))
               (t (expect 'tree (tree-check (make-tree 10)) tree-want))
               (v (make-vector 100 #f)))
          ;; A vector of lists, filled through the write barrier.
          (let fill ((i 0))
            (when (< i 100)
              (vector-set! v i (make-list-n i))
              (fill (+ i 1))))
          (when (= 0 (remainder r 10)) (gc))
          (let ((vs (let sum ((i 0) (s 0))
                      (if (= i 100) s (sum (+ i 1) (+ s (length (vector-ref v i))))))))
            (expect 'vector vs 4950)
            (loop (+ r 1) (+ total l t vs)))))))

(define keep (make-tree 12))
(define keep-sum (tree-check keep))

(define tasks (map (lambda (id) (spawn churn id)) '(1 2 3 4)))
(define sums (map join tasks))
(gc)
(expect 'long-lived (tree-check keep) keep-sum)
(display "ok ") (display sums) (newline)
(display "long-lived tree: ") (display keep-sum) (newline)
(let ((stats (heap-stats)))
  (display "collected: ") (display (> (cdr (assq 'cycles stats)) 0)) (newline)
  (display "bad pointers: ") (display (cdr (assq 'bad-pointers stats))) (newline))
