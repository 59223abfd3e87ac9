#!/usr/bin/env bash
# The Python part of the test command (scripts/test.sh runs it last):
# lints the binding crate (python/), makes a virtual environment in
# target/python-venv (installing python3-venv on Debian/Ubuntu where the
# venv module is missing), installs maturin, NumPy, pytest, Dask,
# distributed and PyArrow from the package registry, builds the abi3 wheel
# (in the shared target/ directory, so the library is not built twice) and
# runs the pytest suite, Dask's LocalCluster of worker processes included.
#
# GPULANES_PYTHON picks the interpreter (default python3, 3.9 or later).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${GPULANES_PYTHON:-python3}"
VENV=target/python-venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "== python: virtual environment in $VENV"
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    # Debian and Ubuntu ship the venv module (and its pip) separately.
    rm -rf "$VENV"
    if command -v apt-get >/dev/null 2>&1; then
      . ./scripts/apt-install.sh
      apt_install python-test.sh "no working Python venv module (the Python tests run in a virtual environment)" python3-venv
    fi
    "$PY" -m venv "$VENV"
  fi
fi
echo "== python: installing the build and test tools"
# dask[distributed] pins distributed to the same release (an unpinned pair
# can resolve to a dask without its distributed).
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "maturin>=1.5,<2" numpy pytest "dask[array,dataframe,distributed]" pyarrow polars
if [ -z "${MESA_VK_DEVICE_SELECT:-}" ]; then export NODEVICE_SELECT="${NODEVICE_SELECT:-1}"; fi
# The binding is built for the venv's interpreter (pyo3 reads its config).
export PYO3_PYTHON="$PWD/$VENV/bin/python"
echo "== python: cargo fmt / clippy (binding crate)"
cargo fmt --check -p gpulanes-python
cargo clippy -p gpulanes-python --all-targets --locked -- -D warnings
echo "== python: building the wheel"
rm -rf target/wheels
"$VENV/bin/maturin" build --release --locked --quiet -m python/Cargo.toml -o target/wheels -i "$VENV/bin/python"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/gpulanes-*.whl
echo "== python: pytest"
# Run from the tests folder so `import gpulanes` is the installed wheel,
# not the source tree.
cd python/tests
"../../$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" .
