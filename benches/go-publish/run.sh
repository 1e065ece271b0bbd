#!/usr/bin/env bash
# Runs the Go publish benchmarks (see ../README.md, "Publishing with several publishers"):
# NATS and an Iris node on loopback, the same-discipline Go client against each, two
# rounds. Usage: benches/go-publish/run.sh [node command...] (default: target/release/iris
# --dev). Needs `go` (Debian's golang-go) and `nats-server` on PATH. Everything stays on
# 127.0.0.1; a node that scans its LAN at boot (the original Go node does) must be run
# inside a network namespace of its own with only loopback up (`ip netns exec`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -gt 0 ] || set -- "$here/../../target/release/iris" --dev
nats-server -a 127.0.0.1 -p 4222 > /tmp/go-publish-nats.log 2>&1 &
nats=$!
"$@" > /tmp/go-publish-node.log 2>&1 &
node=$!
trap 'kill $nats 2>/dev/null; kill -INT $node 2>/dev/null; sleep 1; kill -9 $node 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/55555) 2>/dev/null && break; sleep 0.2; done
cd "$here"
for _ in 1 2; do
    GO111MODULE=off go test -run XXX -bench 'PublishThroughput|RelayPublish' -benchtime 1s | grep Bench
done
