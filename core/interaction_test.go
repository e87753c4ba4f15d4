package core_test

import (
	"path/filepath"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/stepraft/stepraft/core/coretest"
)

// TestInteraction runs the golden scripts in testdata/*.txt (see
// testdata/README.md and coretest.Interaction for the commands). Run with
// -rewrite to regenerate the expected output, then review the diff.
func TestInteraction(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		if filepath.Ext(path) != ".txt" {
			return
		}
		in := coretest.NewInteraction()
		datadriven.RunTest(t, path, in.Handle)
	})
}
