#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time each (default 30s).
# go test -fuzz takes one target per run, so list them and run them in turn.
# The second argument (default 5s) bounds the time spent minimizing each new
# interesting input: go's minimizer tries on the order of n*n candidates for
# an n-byte input, so on a frame of a kilobyte or more it runs until
# -fuzzminimizetime (60s by default), and the progress line shows 0 execs/sec
# the whole time because minimizing executions are counted only when it
# returns. With the default, a 30s run could spend all of it on one input.
set -euo pipefail
fuzztime=${1:-30s}
minimizetime=${2:-5s}
cd "$(dirname "$0")/.."
status=0
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u || true)
	for t in $targets; do
		echo "== $pkg $t ($fuzztime)"
		if ! go test -run '^$' -fuzz "^$t\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimizetime" "$pkg"; then
			status=1
		fi
	done
done
exit $status
