#!/usr/bin/env bash
# Prepares a run on a lent GPU machine (which has no Rust and no Vulkan
# loader): builds the release CLI, a few test binaries and the criterion
# group-by bench, strips them and packs them into .devbin/bins.tar.gz
# (gpulanes, t_<test>, b_group_by), and downloads Debian's Vulkan loader
# package into .gl/ once. Both folders are git-ignored; carry them to the
# GPU machine and run scripts/gpu-doctor.sh there.
#
#   scripts/gpu-prepare.sh [TEST ...]     (default: exact adversarial group_by group_index state_columns kernel_build lanes_keyed reduce_props upload)
#
# What travels is limited (64 MiB in all: the tracked files, .gl and
# .devbin): the script stops where the three come within 1 MiB of that.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=(exact adversarial group_by group_index state_columns kernel_build lanes_keyed reduce_props upload)
for d in .gl .devbin .devrun; do
  grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
if ! compgen -G ".gl/*.deb" >/dev/null; then
  lists=$(mktemp -d); mkdir -p .gl "$lists/partial"
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
  apt-get "${o[@]}" update >/dev/null && (cd .gl && apt-get "${o[@]}" download libvulkan1)
fi
rm -rf .devbin .devrun && mkdir -p .devbin
# The executable cargo builds for `$1` (test or bench) with the cargo
# arguments after it.
built() {
  local kind=$1; shift
  cargo "$@" --locked --no-run --message-format=json 2>/dev/null |
    KIND=$kind python3 -c 'import json,os,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == [os.environ["KIND"]]:
        print(m["executable"])' | tail -1
}
cargo build --release --locked --bin gpulanes
cp target/release/gpulanes .devbin/gpulanes
for t in "${tests[@]}"; do
  exe=$(built test test --release --test "$t")
  [ -n "$exe" ] || { echo "gpu-prepare: no test binary for $t" >&2; exit 1; }
  cp "$exe" ".devbin/t_$t"
done
bench=$(built bench bench --bench group_by)
[ -n "$bench" ] || { echo "gpu-prepare: no group_by bench binary" >&2; exit 1; }
cp "$bench" .devbin/b_group_by
strip .devbin/*
# Packed, about a third of their size: scripts/gpu-env.sh unpacks them on
# the device.
(cd .devbin && tar -czf bins.tar.gz -- * && find . -type f ! -name bins.tar.gz -delete)
ls -la .devbin .gl
# The device run carries the tracked files, .gl and .devbin: 64 MiB in all.
tracked=$(git ls-files -z | xargs -0 cat | wc -c)
carried=$(du -sb .devbin .gl | awk '{s += $1} END {print s}')
total=$(( (tracked + carried) / 1048576 ))
echo "gpu-prepare: .devbin, .gl and the tracked files are ${total} MiB of the 64 MiB a run carries"
if [ "$total" -ge 63 ]; then
  echo "gpu-prepare: too close to 64 MiB; carry fewer test binaries (scripts/gpu-prepare.sh exact group_by lanes_keyed)" >&2
  exit 1
fi
