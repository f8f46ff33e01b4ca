// The same program as benches/sleeper_forkjoin.rs, in Go: `go run .` here.
package main

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
)

type Node struct{ l, r *Node }

func tree(d int) *Node {
	if d == 0 {
		return &Node{}
	}
	return &Node{tree(d - 1), tree(d - 1)}
}

var sink *Node

func spin(d time.Duration) uint64 {
	t := time.Now()
	var x uint64
	for time.Since(t) < d {
		for i := uint64(0); i < 1000; i++ {
			x += i
		}
	}
	return x
}

func main() {
	runtime.GOMAXPROCS(2)
	var stop int32
	var n int64
	done := make(chan bool)
	go func() {
		for atomic.LoadInt32(&stop) == 0 {
			time.Sleep(time.Millisecond)
			atomic.AddInt64(&n, 1)
		}
		done <- true
	}()
	t := time.Now()
	for time.Since(t) < time.Second {
		sink = tree(14)
	}
	atomic.StoreInt32(&stop, 1)
	<-done
	fmt.Printf("spawned sleeper: %d wake-ups in 1 s\n", n)
	t = time.Now()
	c := make(chan uint64)
	go func() { c <- spin(500 * time.Millisecond) }()
	a := spin(500 * time.Millisecond)
	b := <-c
	_ = a ^ b
	fmt.Printf("fork-join of two 500 ms halves: %.3f s\n", time.Since(t).Seconds())
}
