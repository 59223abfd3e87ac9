#!/usr/bin/env bash
# The first request of a new kind on a fresh scheduler (5 fresh processes),
# and the two-lanes experiment with float32 and float64 values, alternately
# (2 runs each). Run from the repository root after
# `cargo build --release --examples --bins`.
set -u
out=$(dirname "$0")
for i in 1 2 3 4 5; do
  NODEVICE_SELECT=1 target/release/examples/first_of_a_dtype
done > "$out/first-of-a-kind.txt" 2> /dev/null
for i in 1 2; do
  for t in float32 float64; do
    NODEVICE_SELECT=1 target/release/gpulanes mixed --json --dtype $t > "$out/mixed-$t-$i.json" 2> /dev/null
  done
done
