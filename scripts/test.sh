#!/usr/bin/env bash
# The test command (README and CI): makes sure a Vulkan driver exists
# (installs Mesa's software driver on Debian/Ubuntu where none is found),
# then checks formatting and lints and runs every test, the Arrow tests
# (the arrow feature), the core tests
# again on wgpu's GL backend (installing Mesa's EGL/GL drivers where
# missing), the doc tests and API docs, the criterion benches in test mode and the examples in their
# small default form, then the Python package's tests (scripts/python-test.sh).
# tests/exact.rs runs its exact reference with python3.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-cc.sh
./scripts/ensure-vulkan.sh
if ! command -v python3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  . ./scripts/apt-install.sh
  apt_install test.sh "no python3 (tests/exact.rs runs its exact reference with it)" python3
fi
export RUST_BACKTRACE=1
# Mesa's device-select Vulkan layer prints an XDG_RUNTIME_DIR error in every
# process that opens a device on a machine without a running Wayland display; it
# is not a failure (the CLI turns the layer off itself, and a CLI test
# checks that with the variable removed).
if [ -z "${MESA_VK_DEVICE_SELECT:-}" ]; then export NODEVICE_SELECT="${NODEVICE_SELECT:-1}"; fi
echo "== cargo fmt --check"; cargo fmt --check
echo "== cargo clippy"; cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test (release: lavapipe runs the shaders on the CPU)"
cargo test --release --locked --all-targets
echo "== Arrow input (the arrow feature)"
cargo clippy --locked --features arrow --lib --test arrow -- -D warnings
cargo test --release --locked --features arrow --test arrow
cargo test --release --locked --features arrow --doc arrow
echo "== core tests on wgpu's GL backend (llvmpipe where there is no GPU): the same bits as on Vulkan"
./scripts/ensure-gl.sh
WGPU_BACKEND=gl cargo test --release --locked --test exact --test reduce_props
echo "== doc tests"; cargo test --release --locked --doc
echo "== API docs (broken links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --lib
echo "== examples (small defaults)"
for ex in $(ls examples/*.rs | xargs -n1 basename | sed 's/\.rs$//'); do
  echo "-- example $ex"; cargo run --release --locked --quiet --example "$ex" >/dev/null
done
echo "== python package (wheel built with maturin, pytest, Dask LocalCluster)"
./scripts/python-test.sh
echo "== all tests passed"
