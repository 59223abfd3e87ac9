#!/usr/bin/env bash
# The first request of each new kind on a fresh scheduler (5 fresh
# processes), and the two-lanes experiment with group-by batch jobs (1000
# and 100000 int32 keys) and with plain sums, alternately (2 runs each).
# Run from the repository root after `cargo build --release --examples --bins`.
set -u
out=$(dirname "$0")
for i in 1 2 3 4 5; do
  NODEVICE_SELECT=1 target/release/examples/first_of_a_dtype
done > "$out/first-of-a-kind.txt" 2> /dev/null
for i in 1 2; do
  NODEVICE_SELECT=1 target/release/gpulanes mixed --json > "$out/mixed-sum-$i.json" 2> /dev/null
  for g in 1000 100000; do
    NODEVICE_SELECT=1 target/release/gpulanes mixed --json --batch-groups $g > "$out/mixed-groups$g-$i.json" 2> /dev/null
  done
done
