#!/usr/bin/env bash
# One device call: correctness tests on the GPU, gpulanes bench (device-resident
# sum/mean/max vs the copy floor), PyTorch peers on the same sizes, mixed lanes.
set -uo pipefail
OUT=${OUT:-/tmp/gpulanes-run}; mkdir -p "$OUT"
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=gpu-env.sh
. "$root/scripts/gpu-env.sh"
bin=$devbin
$bin/gpulanes info --json > "$OUT/info.json"; $bin/gpulanes info
for t in $bin/t_*; do
  echo "== $t"; $t --test-threads=4 > "$OUT/$(basename $t).log" 2>&1; grep -E "^test result|FAILED" "$OUT/$(basename $t).log" | head -8
done
$bin/gpulanes bench --sizes 64K,1M,16M,256M,1G --ops sum,mean,max --partitions none,4K,1M --no-cpu --no-progress --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1; tail -40 "$OUT/bench.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/torch.txt"
import torch, statistics
def t(f, reps=30):
    for _ in range(5): f()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True); ts=[]
    for _ in range(reps):
        s.record(); f(); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    return statistics.median(ts)
for nbytes in [64<<10, 1<<20, 16<<20, 256<<20, 1<<30]:
    n = nbytes//4; xs = [torch.randn(n, device="cuda") for _ in range(4)]; i=[0]
    def pick(): i[0]=(i[0]+1)%4; return xs[i[0]]
    for name, f in [("sum", lambda: torch.sum(pick())), ("mean", lambda: torch.mean(pick())), ("amax", lambda: torch.amax(pick()))]:
        ms = t(f); print(f"torch {name:5s} {nbytes>>10:8d} KiB  {ms*1e3:9.1f} us  {nbytes/ms/1e6:7.0f} GB/s")
    if nbytes >= 1<<20:
        for p in [4096, 1<<20]:
            if n % p == 0 and n//p >= 1:
                m = xs[0].view(n//p, p); ms = t(lambda: torch.sum(m, dim=1)); print(f"torch sum dim=1 parts={p:7d} {nbytes>>10:8d} KiB {ms*1e3:9.1f} us {nbytes/ms/1e6:7.0f} GB/s")
x = torch.randn(1<<28, device="cuda"); y = torch.empty_like(x)
ms = t(lambda: y.copy_(x)); print(f"copy 1 GiB: {ms*1e3:.1f} us  {2*(1<<30)/ms/1e6:.0f} GB/s (read+write)")
PY
$bin/gpulanes mixed --json > "$OUT/mixed.json"; $bin/gpulanes mixed | tee "$OUT/mixed.txt"
