#!/usr/bin/env bash
# gpulanes vs PyTorch on the same GPU in one run, for a lent GPU machine that
# has python3 + torch but no Rust: runs `gpulanes info`, `gpulanes bench
# --json`, then scripts/gpu-peers.py on the same sizes, partitions, ops and
# rotation (read from the gpulanes report), then prints the ratio table
# (gpulanes / PyTorch, and % of the measured copy bandwidth).
#
#   scripts/gpu-compare.sh [GPULANES_BIN] [-- gpulanes bench args...]
#   GPULANES_BIN=.devrun/gpulanes scripts/gpu-compare.sh --quick
#
# The binary defaults to $GPULANES_BIN, else the carried one (.devrun/ once
# unpacked, scripts/gpu-env.sh), else
# target/release/gpulanes. Arguments after it (or all arguments, when the
# first is not a file) go to `gpulanes bench`, e.g. --quick or
# --sizes 64M,256M,1G. PEERS_ARGS adds arguments to gpu-peers.py.
# Full logs and both JSON reports go to $OUT/gpu-compare/ when $OUT is set
# (else to a fresh temporary directory); the table is printed last.
#
# Vulkan: if no libvulkan.so.1 is installed and .gl/*.deb exist (see
# /work/shared/DEVICE.md), they are unpacked first (as root). If
# VK_DRIVER_FILES is unset, the NVIDIA ICD manifest is looked for in the usual
# places.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=gpu-env.sh
. "$here/gpu-env.sh"

bin=${GPULANES_BIN:-}
if [ $# -gt 0 ] && [ -f "$1" ]; then
  bin=$1
  shift
fi
[ "${1:-}" = "--" ] && shift
if [ -z "$bin" ]; then
  for c in "$devbin/gpulanes" "$root/target/release/gpulanes"; do
    if [ -x "$c" ]; then bin=$c; break; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "gpu-compare: no gpulanes binary (give its path, or set GPULANES_BIN)" >&2
  exit 2
fi

logs=${OUT:+$OUT/gpu-compare}
logs=${logs:-$(mktemp -d -t gpu-compare.XXXXXX)}
mkdir -p "$logs"
echo "gpu-compare: logs in $logs" >&2

# Vulkan loader and driver.
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}" > "$logs/env.txt"

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  uname -a
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 || true
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")' 2>&1
} > "$logs/machine.txt"
cat "$logs/machine.txt"

echo "== gpulanes info" | tee "$logs/info.txt"
if ! "$bin" info 2>&1 | tee -a "$logs/info.txt"; then
  echo "gpu-compare: gpulanes info failed (no adapter?): see $logs/info.txt" >&2
  exit 1
fi
"$bin" info --json > "$logs/info.json" 2>>"$logs/info.txt"
if grep -q '"software":true' "$logs/info.json"; then
  echo "gpu-compare: WARNING: gpulanes picked a SOFTWARE adapter; its figures say nothing about the GPU" >&2
fi

echo "== gpulanes bench --json $* ($(date -u +%H:%M:%S))"
start=$(date +%s)
"$bin" bench --no-progress --json "$logs/gpulanes.json" "$@" > "$logs/gpulanes-table.txt" 2> "$logs/gpulanes-stderr.txt"
gl_rc=$?
echo "gpulanes bench exited $gl_rc after $(( $(date +%s) - start ))s"
if [ ! -s "$logs/gpulanes.json" ]; then
  echo "gpu-compare: no gpulanes report; stderr:" >&2
  tail -20 "$logs/gpulanes-stderr.txt" >&2
  exit 1
fi

echo "== gpu-peers.py ($(date -u +%H:%M:%S))"
start=$(date +%s)
# shellcheck disable=SC2086
python3 "$here/gpu-peers.py" --from-gpulanes "$logs/gpulanes.json" --json "$logs/peers.json" ${PEERS_ARGS:-} 2> "$logs/peers-stderr.txt"
pt_rc=$?
echo "gpu-peers.py exited $pt_rc after $(( $(date +%s) - start ))s"
if [ ! -s "$logs/peers.json" ]; then
  echo "gpu-compare: no PyTorch report; stderr:" >&2
  tail -20 "$logs/peers-stderr.txt" >&2
  cat "$logs/gpulanes-table.txt"
  exit 1
fi

echo
echo "== gpulanes bench table"
cat "$logs/gpulanes-table.txt"
echo
echo "== gpulanes vs PyTorch"
python3 "$here/bench-compare.py" "$logs/gpulanes.json" "$logs/peers.json" --json "$logs/compare.json" | tee "$logs/compare.txt"
cmp_rc=${PIPESTATUS[0]}
[ "$gl_rc" -eq 0 ] && [ "$pt_rc" -eq 0 ] && [ "$cmp_rc" -eq 0 ]
