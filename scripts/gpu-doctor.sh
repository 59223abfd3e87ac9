#!/usr/bin/env bash
# The GPU diagnosis, in one run on a lent GPU machine (no Rust there; the
# binaries come prebuilt and packed in .devbin/ and the Vulkan loader in .gl/, see
# scripts/gpu-prepare.sh). Every step writes under $OUT/gpu-doctor/ and has
# its own time limit, so one failing or slow step leaves the others' files:
#   1. the GPU's state: `nvidia-smi -q -d CLOCK,PERFORMANCE` before and after,
#      and a clock/power/utilisation log every 50 ms for the whole run
#      (clocks.csv); Vulkan heaps from vulkaninfo where it exists;
#   2. `gpulanes doctor`: floors (upload, buffer copy, shader copy), sum/mean/max
#      over 16M/256M/1G of float32 and float64, isolated and back to back,
#      a workgroup-count sweep, on the engine variants (default, no workgroup
#      zero-init, no shader runtime checks, both, the kernel shapes, and 264
#      or 1056 persistent workgroups: 2 or 8 per H100 multiprocessor);
#   3. PyTorch on the same cases (scripts/gpu-doctor-peers.py), and the
#      gpulanes-vs-PyTorch table;
#   4. the doctor again (default variant) while another process holds a CUDA
#      context, since NVIDIA drivers may keep a Vulkan-only GPU at a lower
#      performance level;
#   5. `gpulanes bench` with the group-by and small-partition rows beside
#      PyTorch's (scripts/gpu-compare.sh), then the group-by rows under each
#      forced way of taking rows and accumulating (GPULANES_GROUP), and
#      the criterion group-by bench (float32 and float64, from host memory
#      and device-resident) where the bench binary was carried, and where
#      one group-by call spends its time (the engine's debug log: keys
#      planned, values scanned, rows uploaded, passes, results);
#   6. `gpulanes mixed` (the two lanes under a saturating batch stream),
#      and 6b. the same, shorter, with float64 values;
#   7. the correctness test binaries (t_*) where they were carried;
#   8. `gpulanes mixed --batch-groups 1000` (group-by batch jobs beside the
#      real-time stream; last, as the step most easily left out).
#
#   OUT=/tmp/out scripts/gpu-doctor.sh [--quick]
#
# --quick: fewer runs and sizes (a rehearsal, e.g. on lavapipe). Set
# GPULANES_BIN to use another binary, DOCTOR_ARGS to add doctor arguments,
# SKIP="peers cuda bench groups criterion stages mixed mixed64 tests mixedgroups" (any of them) to skip
# steps.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=gpu-env.sh
. "$here/gpu-env.sh"
bin=${GPULANES_BIN:-}
if [ -z "$bin" ]; then
  for c in "$devbin/gpulanes" "$root/target/release/gpulanes"; do
    if [ -x "$c" ]; then bin=$c; break; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "gpu-doctor: no gpulanes binary (run scripts/gpu-prepare.sh, or set GPULANES_BIN)" >&2
  exit 2
fi
quick=0
[ "${1:-}" = "--quick" ] && quick=1
skip=" ${SKIP:-} "
logs=${OUT:+$OUT/gpu-doctor}
logs=${logs:-$(mktemp -d -t gpu-doctor.XXXXXX)}
mkdir -p "$logs"
echo "gpu-doctor: logs in $logs" >&2
stamp() { date -u +%H:%M:%S; }
step() { echo; echo "== $* ($(stamp))"; }

# 1. The GPU's state.
have_smi=0
command -v nvidia-smi >/dev/null 2>&1 && have_smi=1
logger=
if [ $have_smi = 1 ]; then
  nvidia-smi > "$logs/nvidia-smi.txt" 2>&1
  nvidia-smi -q -d CLOCK,PERFORMANCE > "$logs/state-before.txt" 2>&1
  # An unknown field fails the whole query: keep the fields this driver knows.
  fields=
  for f in timestamp pstate clocks.sm clocks.mem clocks.gr power.draw utilization.gpu utilization.memory temperature.gpu clocks_event_reasons.active; do
    if nvidia-smi --query-gpu="$f" --format=csv,noheader >/dev/null 2>&1; then
      fields=${fields:+$fields,}$f
    fi
  done
  echo "fields: $fields" > "$logs/clocks-fields.txt"
  nvidia-smi --query-gpu="$fields" --format=csv -lms 50 > "$logs/clocks.csv" 2>&1 &
  logger=$!
fi
command -v vulkaninfo >/dev/null 2>&1 && timeout 30 vulkaninfo > "$logs/vulkaninfo.txt" 2>&1
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  uname -a
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")' 2>&1
} > "$logs/machine.txt"
cat "$logs/machine.txt"

step "gpulanes info"
if ! "$bin" info 2>&1 | tee "$logs/info.txt"; then
  echo "gpu-doctor: gpulanes info failed (no adapter?)" >&2
  [ -n "$logger" ] && kill "$logger"
  exit 1
fi
"$bin" info --json > "$logs/info.json" 2>/dev/null

# 2. The doctor.
timing_args=()
[ $quick = 1 ] && timing_args=(--runs 5 --back-to-back 4 --warmup-ms 100)
# shellcheck disable=SC2206
timing_args+=(${DOCTOR_ARGS:-})
variants=default,no-zero-init,unchecked,bare,workgroup,subgroup,persistent-264,persistent-1056
step "gpulanes doctor --variants $variants ${timing_args[*]}"
timeout 300 "$bin" doctor --variants "$variants" "${timing_args[@]}" --json "$logs/doctor.json" > "$logs/doctor.txt" 2> "$logs/doctor-stderr.txt"
echo "doctor exited $?"
cat "$logs/doctor.txt"

# 3. PyTorch on the same cases.
if [[ $skip != *" peers "* ]] && [ -s "$logs/doctor.json" ]; then
  step "PyTorch peers"
  timeout 240 python3 "$here/gpu-doctor-peers.py" --doctor "$logs/doctor.json" --json "$logs/peers.json" \
    > "$logs/compare.txt" 2> "$logs/peers-stderr.txt"
  echo "peers exited $?"
  cat "$logs/compare.txt"
fi

# 4. The doctor while another process holds a CUDA context.
if [[ $skip != *" cuda "* ]] && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  step "gpulanes doctor beside a CUDA context"
  python3 -c "import torch,time; torch.ones(1,device='cuda'); print('held', flush=True); time.sleep(600)" > "$logs/cuda-holder.txt" 2>&1 &
  holder=$!
  for _ in $(seq 60); do grep -q held "$logs/cuda-holder.txt" 2>/dev/null && break; sleep 0.5; done
  [ -n "$logger" ] && echo "# CUDA context held from $(stamp)" >> "$logs/clocks-marks.txt"
  timeout 200 "$bin" doctor --variants default --units none "${timing_args[@]}" \
    --json "$logs/doctor-cuda-context.json" > "$logs/doctor-cuda-context.txt" 2>&1
  echo "doctor (CUDA context held) exited $?"
  kill "$holder" 2>/dev/null
  [ -n "$logger" ] && echo "# CUDA context released at $(stamp)" >> "$logs/clocks-marks.txt"
  cat "$logs/doctor-cuda-context.txt"
fi

# 5. The bench with group-by and small-partition rows, beside PyTorch.
if [[ $skip != *" bench "* ]]; then
  step "gpulanes bench beside PyTorch (gpu-compare.sh)"
  if [ $quick = 1 ]; then
    bench_args=(--quick --dtype float32 --ops sum --no-cpu)
  else
    bench_args=(--dtype float32 --sizes 16M,256M,1G --partitions none,64,4K --ops sum,mean,max --no-cpu --group-by-rows 16M)
  fi
  OUT="$logs" GPULANES_BIN="$bin" timeout 300 "$here/gpu-compare.sh" "${bench_args[@]}" > "$logs/gpu-compare.txt" 2>&1
  echo "gpu-compare exited $?"
  tail -60 "$logs/gpu-compare.txt"
fi

# 5b. The group-by rows under each forced way of taking rows and
# accumulating (GPULANES_GROUP; the same bits each), to see which suits
# this GPU at each cardinality.
if [[ $skip != *" groups "* ]]; then
  group_rows=16M
  [ $quick = 1 ] && group_rows=1M
  for way in runs direct,global direct,private direct,compact; do
    name=${way//,/-}
    step "group-by rows with GPULANES_GROUP=$way"
    GPULANES_GROUP=$way timeout 120 "$bin" bench --dtype float32 --sizes 16M --ops sum --partitions none \
      --no-cpu --no-progress --group-by-rows "$group_rows" --json "$logs/group-$name.json" \
      > "$logs/group-$name.txt" 2>&1
    echo "bench ($way) exited $?"
    grep -A8 '^group-by' "$logs/group-$name.txt"
  done
fi

# 5c. The criterion group-by bench: float32 and float64 values, from host
# memory and device-resident (the device rows compare with PyTorch's keyed
# ops on GPU tensors), each case checked against the exact reference first.
if [[ $skip != *" criterion "* ]] && [ -x "$devbin/b_group_by" ]; then
  step "criterion group-by bench"
  rows=16M
  [ $quick = 1 ] && rows=1M
  # Criterion's own reports (hundreds of small files) stay out of the logs;
  # the sparse-key rows (host work) are left out to keep within the time.
  CRITERION_HOME=$(mktemp -d) GPULANES_BENCH_ROWS=$rows timeout 240 "$devbin/b_group_by" \
    --bench '/(host|device)/' > "$logs/criterion-group-by.txt" 2>&1
  echo "criterion group-by exited $?"
  grep -E 'time:' "$logs/criterion-group-by.txt"
fi

# 5d. Where the time of a group-by call goes: the engine logs each call's
# stages at debug level (key planning; the values' exponent scan; rows to
# the device; passes recorded until the readback is mapped; the host's
# results). On a GPU the host stages may be most of a call.
if [[ $skip != *" stages "* ]]; then
  step "group-by stages (debug log)"
  stage_rows=16M
  [ $quick = 1 ] && stage_rows=1M
  RUST_LOG=gpulanes::keyed=debug timeout 120 "$bin" bench --dtype float32 --sizes 1M --ops sum \
    --partitions none --no-cpu --no-progress --group-by-rows "$stage_rows" \
    > /dev/null 2> "$logs/group-stages.txt"
  echo "bench (stages) exited $?"
  grep -E 'planned|passes recorded' "$logs/group-stages.txt" | sed 's/^.*DEBUG //' | tail -8
fi

# 6. The two lanes.
if [[ $skip != *" mixed "* ]]; then
  step "gpulanes mixed"
  timeout 180 "$bin" mixed --json > "$logs/mixed.json" 2> "$logs/mixed-stderr.txt"
  echo "mixed exited $?"
  python3 - "$logs/mixed.json" <<'PY' 2>/dev/null | tee "$logs/mixed-summary.txt"
import json, sys
r = json.load(open(sys.argv[1]))
keys = [k for k in r if any(w in k for w in ("ratio", "share", "p99", "throughput"))]
for k in keys:
    if not isinstance(r[k], (dict, list)):
        print(f"{k}: {r[k]}")
PY
fi

# A shorter run of the two lanes (32Mi-value batch jobs, 2 rounds of 1 s,
# 2 cold starts) with the extra flags given, into $logs/mixed-NAME.*.
short_mixed() {
  local name=$1
  shift
  timeout 90 "$bin" mixed --json --batch-size 33554432 --duration 2 --rounds 2 --cold-starts 2 "$@" \
    > "$logs/mixed-$name.json" 2> "$logs/mixed-$name-stderr.txt"
  echo "mixed ($name) exited $?"
  python3 - "$logs/mixed-$name.json" <<'PY' 2>/dev/null | tee "$logs/mixed-$name-summary.txt"
import json, sys
r = json.load(open(sys.argv[1]))
for k in ("rt_p99_ratio", "batch_throughput_ratio", "cold_rt_p99_ratio", "batch_results_identical"):
    print(f"{k}: {r.get(k)}")
PY
}

# 6b. The two lanes with float64 values (shorter).
if [[ $skip != *" mixed64 "* ]]; then
  step "gpulanes mixed --dtype float64"
  short_mixed float64 --dtype float64
fi

# 7. Correctness on this GPU.
if [[ $skip != *" tests "* ]] && compgen -G "$devbin/t_*" >/dev/null; then
  step "test binaries"
  export GPULANES_ORACLE="$root/tests/oracle.py"
  for t in "$devbin"/t_*; do
    name=$(basename "$t")
    timeout 240 "$t" --test-threads=4 > "$logs/$name.log" 2>&1
    echo "$name exited $?: $(grep -E '^test result' "$logs/$name.log" | tail -1)"
  done
fi

# 8. The two lanes with group-by batch jobs (keys and values from host
# memory, so each step uploads its rows).
if [[ $skip != *" mixedgroups "* ]]; then
  step "gpulanes mixed --batch-groups 1000"
  short_mixed groups --batch-groups 1000
fi

if [ $have_smi = 1 ]; then
  nvidia-smi -q -d CLOCK,PERFORMANCE > "$logs/state-after.txt" 2>&1
  [ -n "$logger" ] && kill "$logger" 2>/dev/null
fi
step "done; files in $logs"
ls -la "$logs"
