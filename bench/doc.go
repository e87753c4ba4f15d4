// Command bench will measure stepraft's throughput and latency across fsync
// policies, batch sizes, payloads and client counts (see DESIGN.md). For
// now the core benchmarks run with: go test -bench . ./core/
package main

func main() {}
