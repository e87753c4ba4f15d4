package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSmoke runs the benchmark for a moment, as CI does: it must finish,
// print a row per configuration and write the JSON and the SVG.
func TestSmoke(t *testing.T) {
	dir := t.TempDir()
	jsonFile, svgFile := filepath.Join(dir, "out.json"), filepath.Join(dir, "out.svg")
	var out, errOut bytes.Buffer
	rc := run([]string{"-clients", "1,8", "-size", "16", "-sync", "each,never", "-duration", "300ms", "-warmup", "100ms",
		"-tick", "20ms", "-reads", "0.2", "-dir", dir, "-json", jsonFile, "-svg", svgFile}, &out, &errOut)
	if rc != 0 {
		t.Fatalf("exit %d\n%s\n%s", rc, out.String(), errOut.String())
	}
	t.Log(out.String())
	if !strings.Contains(out.String(), "calibration:") || !strings.Contains(out.String(), "one client: p50") {
		t.Fatalf("output:\n%s", out.String())
	}
	var got struct{ Results []result }
	b, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil || len(got.Results) != 4 {
		t.Fatalf("JSON: %v, %d results", err, len(got.Results))
	}
	for _, r := range got.Results {
		if r.Ops == 0 || r.OpsPerSec <= 0 || r.P50 <= 0 || r.P99 < r.P50 {
			t.Errorf("result %+v", r)
		}
		if r.Sync == "each" && r.FsyncsPerSec <= 0 {
			t.Errorf("no fsyncs counted under sync=each: %+v", r)
		}
	}
	svg, _ := os.ReadFile(svgFile)
	if !strings.HasPrefix(string(svg), "<svg") || !strings.Contains(string(svg), "sync=each, 16 B") {
		t.Fatalf("SVG:\n%s", svg)
	}
}
