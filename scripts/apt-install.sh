#!/usr/bin/env bash
# Shared by ensure-cc.sh and ensure-vulkan.sh (sourced): `apt_install WHO
# WHAT PACKAGE...` installs PACKAGEs with apt-get, as root or through sudo,
# saying it does so for WHAT ("no C compiler (cc) found"); it returns 1 with
# the command to run where there is neither root nor sudo. WHO prefixes the
# messages (the calling script's name).

apt_install() {
  local who="$1" what="$2"
  shift 2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "$who: $what; run as root: apt-get install -y $*" >&2
      return 1
    fi
  fi
  echo "$who: $what; installing $*."
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
