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
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "ensure-cc: no C compiler (cc) found; run as root: apt-get install -y gcc libc6-dev" >&2
      exit 1
    fi
  fi
  echo "ensure-cc: no C compiler (cc) found; installing gcc and libc6-dev (Rust links with cc)."
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
  command -v cc >/dev/null 2>&1 && { echo "ensure-cc: installed."; exit 0; }
  echo "ensure-cc: gcc installed but no cc on the PATH" >&2
  exit 1
fi

echo "ensure-cc: no C compiler (cc) found: install gcc (or clang) with your package manager." >&2
exit 1
