#!/usr/bin/env bash
# The project's test command (the README names it; .ci/run runs it):
# every package's tests under the race detector, then the mutant check,
# which builds core with each deliberately broken rule and requires the
# test suite to catch it.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -race -count=1 ./...
scripts/mutants.sh
