#!/usr/bin/env bash
# Alternates the binary before and after the keyed-stream change on the same
# files; prints wall seconds and peak RSS per run.
set -u
cd "${1:-.}"   # the folder holding k.npy, v.npy and the two binaries
for round in 1 2 3; do
  for b in gl_before gl_after; do
    for budget in 64M 4G; do
      /usr/bin/time -f "$b budget=$budget round=$round %e s %M KB" ./$b reduce --op sum,max,count --keys k.npy --budget $budget --json v.npy 2>&1 >out_${b}_$budget.json | grep -v XDG
    done
  done
done
cmp out_gl_before_64M.json out_gl_after_64M.json && cmp out_gl_before_4G.json out_gl_after_64M.json && echo "all outputs identical"
