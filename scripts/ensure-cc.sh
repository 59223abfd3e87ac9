#!/usr/bin/env bash
# Makes sure a C compiler and linker (`cc`) exist: rustup installs Rust but
# not the system linker, and some dependencies (psm, alloca) compile C.
#
# - If `cc` is on the PATH, it does nothing.
# - On Debian/Ubuntu without it, it installs `gcc` and `libc6-dev` with
#   apt-get, as root or through sudo.
# - Elsewhere it prints what to install and exits 1 on Linux (the build
#   would fail at link time); on macOS and Windows, rustup's own setup
#   (Xcode command line tools, MSVC build tools) provides the linker.
set -euo pipefail

case "$(uname -s)" in
  Darwin|MINGW*|MSYS*|CYGWIN*) exit 0 ;;
esac

if command -v cc >/dev/null 2>&1; then
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  . "$(dirname "$0")/apt-install.sh"
  apt_install ensure-cc "no C compiler (cc) found (Rust links with cc)" gcc libc6-dev || exit 1
  command -v cc >/dev/null 2>&1 && { echo "ensure-cc: installed."; exit 0; }
  echo "ensure-cc: gcc installed but no cc on the PATH" >&2
  exit 1
fi

echo "ensure-cc: no C compiler (cc) found: install gcc (or clang) with your package manager." >&2
exit 1
