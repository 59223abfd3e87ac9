#!/usr/bin/env bash
# The demo command (README): makes sure a Vulkan driver exists, then shows
# gpulanes on this machine's adapter: the adapter, reductions of a slice and
# an ndarray, and the two lanes (real-time and batch) sharing one GPU queue.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-cc.sh
./scripts/ensure-vulkan.sh
cargo build --release --locked --quiet --bin gpulanes --examples
./target/release/gpulanes info
echo
./target/release/examples/quickstart
if [ -f examples/mixed_lanes.rs ]; then
  echo
  ./target/release/examples/mixed_lanes
fi
