#!/usr/bin/env bash
# Makes sure wgpu's GL backend can find a GL driver through EGL, so the core
# tests can also run there (Mesa's llvmpipe on machines without a GPU): the
# EGL loader (libEGL.so.1), Mesa's EGL vendor file and its GL drivers.
#
# - If libEGL.so.1 and an EGL vendor file are found, it does nothing.
# - On Debian/Ubuntu it installs libegl1, libegl-mesa0 and libgl1-mesa-dri
#   with apt-get (as root or through sudo).
# - Elsewhere it exits 1 saying what to install; the caller decides whether
#   that is fatal (the test script treats a missing GL as a failure on
#   Debian/Ubuntu only).
set -euo pipefail

have_egl() {
  ldconfig -p 2>/dev/null | grep 'libEGL\.so\.1 ' >/dev/null \
    && compgen -G "/usr/share/glvnd/egl_vendor.d/*.json" >/dev/null 2>&1
}

if have_egl; then
  echo "ensure-gl: EGL and a GL driver are installed."
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  . "$(dirname "$0")/apt-install.sh"
  apt_install ensure-gl "no EGL/GL driver found" libegl1 libegl-mesa0 libgl1-mesa-dri || exit 1
  have_egl && { echo "ensure-gl: installed."; exit 0; }
  echo "ensure-gl: installed, but no libEGL.so.1 or EGL vendor file found" >&2
  exit 1
fi
echo "ensure-gl: no EGL/GL driver found; install Mesa's EGL and GL drivers to run the GL tests." >&2
exit 1
