//go:build !mutant

package core

// mutant names the deliberately broken rule of a mutant build, and is empty
// in every real build. scripts/mutants.sh builds core with -tags mutant
// and an -overlay that adds core/mutant_on.go declaring
// const mutant = "<name>", and requires the test suite to fail. Every use
// is a comparison with a constant, so real builds carry no trace of it.
const mutant = ""
