// The same program as benches/loops30.rs, in Go: `go run .` here.
package main

import (
	"fmt"
	"runtime"
	"sync"
	"time"
)

//go:noinline
func addLoop(n uint64) uint64 {
	var x uint64
	for i := uint64(0); i < n; i++ {
		x += i
	}
	return x
}

func main() {
	runtime.GOMAXPROCS(2)
	t := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var s uint64
	for k := 0; k < 30; k++ {
		wg.Add(1)
		go func() { defer wg.Done(); v := addLoop(100000000); mu.Lock(); s += v; mu.Unlock() }()
	}
	wg.Wait()
	fmt.Printf("30 loops: %.3f s (sum %d)\n", time.Since(t).Seconds(), s)
}
