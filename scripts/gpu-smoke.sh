#!/usr/bin/env bash
# Correctness and lanes smoke run on a lent GPU machine (no Rust there):
# prebuilt binaries carried in .devbin/ (gpulanes, t_* test binaries; see
# scripts/gpu-env.sh). Logs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpulanes-smoke}; mkdir -p "$OUT"
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=gpu-env.sh
. "$root/scripts/gpu-env.sh"
bin=$devbin
$bin/gpulanes info | tee "$OUT/info.txt"
$bin/gpulanes info --json > "$OUT/info.json"
for t in $bin/t_*; do
  echo "== $t"
  $t --test-threads=4 2>&1 | tee "$OUT/$(basename $t).log" | grep -E "^test result|FAILED|panicked" 
done
python3 - <<'PY' | tee "$OUT/torch.txt"
import torch
x = torch.randn(256 << 20, device="cuda")
for f, name in [(torch.sum, "sum"), (torch.amax, "amax")]:
    for _ in range(3): f(x)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(20):
        s.record(); f(x); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    ts.sort(); ms = ts[len(ts)//2]
    print(f"torch.{name} 1 GiB: {ms:.3f} ms  {x.numel()*4/ms/1e6:.0f} GB/s")
y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
ts=[]
for _ in range(20):
    s.record(); y.copy_(x); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
ts.sort(); ms = ts[len(ts)//2]
print(f"copy 1 GiB (read+write): {ms:.3f} ms  {2*x.numel()*4/ms/1e6:.0f} GB/s")
PY
$bin/gpulanes mixed | tee "$OUT/mixed.txt"
$bin/gpulanes mixed --json > "$OUT/mixed.json"
