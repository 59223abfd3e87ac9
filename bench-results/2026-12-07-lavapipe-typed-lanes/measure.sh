#!/usr/bin/env bash
# The two-lanes experiment with float32 and float64 values, alternately
# (2 runs each). Run from the repository root after
# `cargo build --release --examples --bins`.
set -u
out=$(dirname "$0")
for i in 1 2; do
  for t in float32 float64; do
    NODEVICE_SELECT=1 target/release/gpulanes mixed --json --dtype $t > "$out/mixed-$t-$i.json" 2> /dev/null
  done
done
