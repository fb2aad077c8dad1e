#!/usr/bin/env bash
# Runs every fuzz target in the repository for the given time each (default
# 30s): those of the main module and of the modules of their own inside it
# (SUBMODULES, as the Makefile passes it; store/etcd and directory/dht when
# unset), whose packages go list ./... at the top does not reach.
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
submodules=${SUBMODULES-store/etcd directory/dht}
cd "$(dirname "$0")/.."
root=$PWD
status=0
for mod in . $submodules; do
	cd "$root/$mod"
	pkgs=$(go list -f '{{.ImportPath}} {{.Dir}}' ./...)
	while read -r pkg dir; do
		targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u || true)
		for t in $targets; do
			echo "== $pkg $t ($fuzztime)"
			if ! go test -run '^$' -fuzz "^$t\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimizetime" "$pkg"; then
				status=1
			fi
		done
	done <<<"$pkgs"
done
exit $status
