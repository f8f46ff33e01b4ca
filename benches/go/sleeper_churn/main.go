// The same program as benches/sleeper_churn.rs, in Go: `go run . [seconds]`
// here (or `bash ci/sleeper_churn.sh`). A goroutine sleeps 1 ms in a loop
// beside one that keeps a depth-20 tree and builds, checks and drops
// depth-18 trees; GOMAXPROCS=2. Prints the sleep lateness (time past the
// 1 ms asked for) p50 / p99 / max and the GC's figures.
package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync/atomic"
	"time"
)

type Node struct{ l, r *Node }

func create(d int) *Node {
	if d == 0 {
		return &Node{}
	}
	return &Node{create(d - 1), create(d - 1)}
}

func check(n *Node) int {
	if n.l == nil {
		return 1
	}
	return 1 + check(n.l) + check(n.r)
}

// Nearest-rank percentile of sorted v (the same rule as the Rust bench).
func pct(v []time.Duration, p float64) time.Duration {
	r := int(math.Ceil(p / 100 * float64(len(v))))
	if r < 1 {
		r = 1
	}
	if r > len(v) {
		r = len(v)
	}
	return v[r-1]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func main() {
	runtime.GOMAXPROCS(2)
	secs := 10.0
	if len(os.Args) > 1 {
		if s, err := strconv.ParseFloat(os.Args[1], 64); err == nil {
			secs = s
		}
	}
	t0 := time.Now()
	var stop int32
	lateCh := make(chan []time.Duration)
	go func() {
		late := make([]time.Duration, 0, 20000)
		for atomic.LoadInt32(&stop) == 0 {
			t := time.Now()
			time.Sleep(time.Millisecond)
			l := time.Since(t) - time.Millisecond
			if l < 0 {
				l = 0
			}
			late = append(late, l)
		}
		lateCh <- late
	}()
	treesCh := make(chan int)
	go func() {
		long := create(20)
		t := time.Now()
		n := 0
		for time.Since(t) < time.Duration(secs*float64(time.Second)) {
			if check(create(18)) != 1<<19-1 {
				panic("bad tree")
			}
			n++
		}
		if check(long) != 1<<21-1 {
			panic("bad long-lived tree")
		}
		treesCh <- n
	}()
	trees := <-treesCh
	atomic.StoreInt32(&stop, 1)
	late := <-lateCh
	wall := time.Since(t0)
	sort.Slice(late, func(i, j int) bool { return late[i] < late[j] })
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	fmt.Printf("go sleeper beside binary-trees churn: %d sleeps, lateness p50 %.3f / p99 %.3f / max %.3f ms; %d depth-18 trees in %.1f s\n",
		len(late), ms(pct(late, 50)), ms(pct(late, 99)), ms(pct(late, 100)), trees, wall.Seconds())
	fmt.Printf("  gc: %d cycles, total pause %.1f ms\n", ms0.NumGC, float64(ms0.PauseTotalNs)/1e6)
}
