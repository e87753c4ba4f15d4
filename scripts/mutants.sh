#!/usr/bin/env bash
# mutants.sh builds core once per deliberately broken rule ("mutant") and
# requires the core test suite to fail for each one.
#
# Mutants are the `mutant == "<name>"` / `mutant != "<name>"` guards in
# core/*.go. A real build sees `const mutant = ""` (core/mutant_off.go,
# build tag !mutant). For each name this script writes core/mutant_on.go
# (`//go:build mutant`, `const mutant = "<name>"`) into a temporary
# directory and hands it to the go command with -overlay, so the work tree
# is never modified.
#
# A mutant that does not compile is an error of this script (exit 2), not a
# kill: the suite must fail because a test caught the broken rule.
#
# Usage: scripts/mutants.sh [extra go test flags, e.g. -skip TestInteraction]
# Environment: MUTANT_JOBS (parallel mutants, default: number of CPUs, max 4).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
pkgs=./core/...
timeout=120s

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mapfile -t names < <(grep -rhoE 'mutant [!=]= "[a-z_]+"' core | sed -E 's/.*"([a-z_]+)"/\1/' | sort -u)
if [ "${#names[@]}" -eq 0 ]; then
	echo "mutants: no mutant guards found in core" >&2
	exit 2
fi

echo "mutants: normal build and tests"
if ! go test -count=1 -timeout "$timeout" "$@" $pkgs >"$tmp/normal.log" 2>&1; then
	cat "$tmp/normal.log" >&2
	echo "mutants: the normal build fails; fix it first" >&2
	exit 2
fi

# run_mutant NAME writes "$tmp/NAME.result": killed, SURVIVED or BUILD-ERROR.
run_mutant() {
	local name=$1 dir="$tmp/$1"
	shift
	mkdir -p "$dir"
	cat >"$dir/mutant_on.go" <<EOF
//go:build mutant

package core

const mutant = "$name"
EOF
	printf '{"Replace": {"%s": "%s"}}\n' "$root/core/mutant_on.go" "$dir/mutant_on.go" >"$dir/overlay.json"
	local flags=(-count=1 -tags mutant -overlay "$dir/overlay.json" -timeout "$timeout")
	# Compile everything (tests included) and run nothing: a failure here is
	# a broken mutant, not a kill.
	if ! go test "${flags[@]}" -run '^$' $pkgs >"$dir/build.log" 2>&1; then
		echo BUILD-ERROR >"$tmp/$name.result"
		return
	fi
	if go test "${flags[@]}" "$@" $pkgs >"$dir/test.log" 2>&1; then
		echo SURVIVED >"$tmp/$name.result"
	elif grep -qE '\[(build|setup) failed\]' "$dir/test.log"; then
		echo BUILD-ERROR >"$tmp/$name.result"
	else
		echo killed >"$tmp/$name.result"
	fi
}

jobs=${MUTANT_JOBS:-$(nproc 2>/dev/null || echo 2)}
if [ "$jobs" -gt 4 ]; then
	jobs=4
fi
echo "mutants: ${#names[@]} mutants, $jobs at a time"
running=0
for name in "${names[@]}"; do
	run_mutant "$name" "$@" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait -n
		running=$((running - 1))
	fi
done
wait

survived=0
broken=0
for name in "${names[@]}"; do
	result=$(cat "$tmp/$name.result")
	case $result in
	killed)
		# The top-level tests that failed (subtests are indented).
		killer=$(grep -oE -- '^--- FAIL: [A-Za-z0-9_]+' "$tmp/$name/test.log" | sed 's/--- FAIL: //' | paste -sd, - || true)
		printf '%-28s killed     %s\n' "$name" "${killer:-(panic or timeout)}"
		;;
	SURVIVED)
		printf '%-28s SURVIVED\n' "$name"
		survived=$((survived + 1))
		;;
	*)
		printf '%-28s BUILD-ERROR\n' "$name"
		sed 's/^/    /' "$tmp/$name/build.log" "$tmp/$name/test.log" 2>/dev/null | head -20 >&2 || true
		broken=$((broken + 1))
		;;
	esac
done

if [ "$broken" -gt 0 ]; then
	echo "mutants: $broken mutant(s) do not build" >&2
	exit 2
fi
if [ "$survived" -gt 0 ]; then
	echo "mutants: $survived of ${#names[@]} survived" >&2
	exit 1
fi
echo "mutants: all ${#names[@]} killed"
