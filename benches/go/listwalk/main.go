// The Go twin of benches/listwalk.rs: a linked list of cells (default 1M),
// summed (default 50 rounds). Usage: listwalk [cells] [rounds].
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

type Cell struct {
	next *Cell
	val  int
}

func main() {
	n, rounds := 1000000, 50
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	if len(os.Args) > 2 {
		rounds, _ = strconv.Atoi(os.Args[2])
	}
	var head *Cell
	for i := 0; i < n; i++ {
		head = &Cell{next: head, val: i}
	}
	t := time.Now()
	sum := 0
	for r := 0; r < rounds; r++ {
		for p := head; p != nil; p = p.next {
			sum += p.val
		}
	}
	el := time.Since(t)
	fmt.Printf("go list walk, %d cells x %d: %.2f ns per cell (sum %d)\n", n, rounds, float64(el.Nanoseconds())/float64(n*rounds), sum)
}
