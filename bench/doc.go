// Package bench will become the benchmark command (go run ./bench):
// throughput and latency across fsync policies, batch sizes, payloads and
// client counts (see DESIGN.md). Until node exists, core's own benchmarks
// run with: go test -run '^$' -bench . ./core/
package bench
