#!/usr/bin/env bash
# Before/after: `gpulanes bench` of two builds, interleaved, in one run.
#
#   scripts/bench-before-after.sh OLD_BIN NEW_BIN [OUT_DIR] [-- extra bench args]
#
# Runs ROUNDS rounds (default 5); each round runs both binaries once, the
# order alternating between rounds (old first in odd rounds), on the same
# sizes, ops, partitions and seed, device-resident rows only (--no-host
# --no-cpu; extra args after `--` go to both binaries). The old binary runs
# float32 (it takes no --dtype); the new one NEW_DTYPES (default
# float32,float64). Each run's JSON and table go to OUT_DIR (default: a
# fresh temporary directory), then scripts/bench-before-after.py prints
# the medians over the rounds and the ratios new/old (float32) and
# float64/float32 (new build), in input bytes/s, and writes summary.json.
#
# Settings (environment): ROUNDS=5 SIZES=1M,16M,64M OPS=sum,max
# PARTITIONS=1M SEED=1 NEW_DTYPES=float32,float64 BAR_SIZE=64M.
#
# On a software adapter (lavapipe) the timings are CPU speed, not GPU speed:
# only the ratios inside one run mean anything.
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
old=$1
new=$2
shift 2
out=
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  out=$1
  shift
fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then
  shift
fi
extra=("$@")
for b in "$old" "$new"; do
  [ -x "$b" ] || { echo "bench-before-after: $b is not an executable" >&2; exit 2; }
done
out=${out:-$(mktemp -d -t gpulanes-before-after.XXXXXX)}
mkdir -p "$out"

rounds=${ROUNDS:-5}
sizes=${SIZES:-1M,16M,64M}
ops=${OPS:-sum,max}
partitions=${PARTITIONS:-1M}
seed=${SEED:-1}
new_dtypes=${NEW_DTYPES:-float32,float64}
here=$(cd "$(dirname "$0")" && pwd)

common=(bench --sizes "$sizes" --ops "$ops" --partitions "$partitions"
  --seed "$seed" --no-host --no-cpu --no-progress)

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "old: $old ($(sha256sum "$old" | cut -c1-16))"
  echo "new: $new ($(sha256sum "$new" | cut -c1-16))"
  echo "rounds=$rounds sizes=$sizes ops=$ops partitions=$partitions seed=$seed new_dtypes=$new_dtypes"
  echo "extra: ${extra[*]:-}"
  echo "GPULANES_KERNELS=${GPULANES_KERNELS:-}"
  echo "host: $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
} | tee "$out/settings.txt"

run_one() { # which round
  local which=$1 round=$2 bin args
  if [ "$which" = old ]; then
    bin=$old
    args=("${common[@]}")
  else
    bin=$new
    args=("${common[@]}" --dtype "$new_dtypes")
  fi
  local start=$SECONDS
  "$bin" "${args[@]}" ${extra[@]+"${extra[@]}"} --json "$out/$which-$round.json" \
    >"$out/$which-$round.txt" 2>"$out/$which-$round.err"
  echo "round $round $which: $((SECONDS - start)) s, load $(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')" \
    | tee -a "$out/settings.txt"
}

for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    run_one old "$round"
    run_one new "$round"
  else
    run_one new "$round"
    run_one old "$round"
  fi
done

python3 "$here/bench-before-after.py" "$out" --bar-size "${BAR_SIZE:-64M}" | tee "$out/summary.txt"
echo "(raw reports in $out)"
