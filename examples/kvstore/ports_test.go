package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

// The tests' member processes bind ports that were picked before they
// start, and bind them again at each restart. A port picked with ":0"
// comes from the kernel's ephemeral range, from which every outgoing
// connection on the machine (this test's clients and proxy, other test
// packages running beside it) also takes its local port: one of them took
// a member's HTTP port before the member bound it, and the member exited
// with "address already in use". testAddr picks below that range instead,
// where only a listener asking for a port by number goes, and never hands
// out the same port twice in one test binary.

var testPorts struct {
	sync.Mutex
	used map[int]bool
}

// testPortLow and the start of the ephemeral range bound testAddr's ports.
const testPortLow = 20000

func testAddr(t testing.TB) string {
	t.Helper()
	high := ephemeralLow()
	testPorts.Lock()
	defer testPorts.Unlock()
	if testPorts.used == nil {
		testPorts.used = map[int]bool{}
	}
	for range 1000 {
		port := testPortLow + rand.IntN(high-testPortLow)
		if testPorts.used[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken
		}
		ln.Close()
		testPorts.used[port] = true
		return addr
	}
	t.Fatalf("no free port in [%d, %d) after 1000 tries", testPortLow, high)
	return ""
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default if it cannot be read).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var lo, hi int
		if n, _ := fmt.Sscan(string(b), &lo, &hi); n == 2 && lo > testPortLow+1000 {
			low = lo
		}
	}
	return low
}
