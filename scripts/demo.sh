#!/usr/bin/env bash
# The demo command (README): makes sure a Vulkan driver exists, then shows
# gpulanes on this machine's adapter: the adapter, reductions of a slice and
# an ndarray, and the two lanes (real-time and batch) sharing one GPU queue;
# then the Python package's example where the test command has built it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-cc.sh
./scripts/ensure-vulkan.sh
cargo build --release --locked --quiet --bin gpulanes --examples
# Mesa's device-select Vulkan layer connects to a Wayland display to order
# GPUs and, with no Wayland display running, prints an XDG_RUNTIME_DIR error that
# reads as a failure; gpulanes picks its adapter itself. The CLI turns the
# layer off on its own; the examples here run with it off too.
if [ -z "${MESA_VK_DEVICE_SELECT:-}" ]; then export NODEVICE_SELECT="${NODEVICE_SELECT:-1}"; fi
./target/release/gpulanes info
echo
./target/release/examples/quickstart
if [ -f examples/mixed_lanes.rs ]; then
  echo
  ./target/release/examples/mixed_lanes
fi
# The Python package, where scripts/python-test.sh (part of the test
# command) has built it into target/python-venv.
echo
if [ -x target/python-venv/bin/python ] && target/python-venv/bin/python -c 'import gpulanes' >/dev/null 2>&1; then
  target/python-venv/bin/python python/examples/quickstart.py
else
  echo "Python: ./scripts/python-test.sh builds the package into target/python-venv; then"
  echo "  target/python-venv/bin/python python/examples/quickstart.py"
fi
