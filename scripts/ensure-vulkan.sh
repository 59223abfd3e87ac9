#!/usr/bin/env bash
# Makes sure a Vulkan driver is present so wgpu can find an adapter.
#
# - If any Vulkan ICD manifest is already installed (a GPU driver or Mesa),
#   it does nothing.
# - On Debian/Ubuntu without one, it installs Mesa's software driver
#   (`mesa-vulkan-drivers`, which provides lavapipe) with apt-get, as root or
#   through sudo.
# - Elsewhere it prints what to install and exits 0, so macOS (Metal) and
#   Windows (DX12) users are not blocked: wgpu does not need Vulkan there.
set -euo pipefail

icd_dirs=(/usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d)
have_icd() {
  for d in "${icd_dirs[@]}"; do
    if compgen -G "$d/*.json" >/dev/null 2>&1; then return 0; fi
  done
  [ -n "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]
}

case "$(uname -s)" in
  Darwin) echo "ensure-vulkan: macOS uses Metal; nothing to install."; exit 0 ;;
  MINGW*|MSYS*|CYGWIN*) echo "ensure-vulkan: Windows uses DX12/Vulkan from your GPU driver; nothing to install."; exit 0 ;;
esac

if have_icd; then
  echo "ensure-vulkan: a Vulkan driver is installed."
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "ensure-vulkan: no Vulkan driver found; run as root: apt-get install -y mesa-vulkan-drivers" >&2
      exit 1
    fi
  fi
  echo "ensure-vulkan: no Vulkan driver found; installing mesa-vulkan-drivers (software lavapipe)."
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
  have_icd && { echo "ensure-vulkan: installed."; exit 0; }
  echo "ensure-vulkan: mesa-vulkan-drivers installed but no ICD manifest found" >&2
  exit 1
fi

echo "ensure-vulkan: no Vulkan driver found. Install your GPU's Vulkan driver, or Mesa's" >&2
echo "  software driver (Fedora: dnf install mesa-vulkan-drivers; Arch: pacman -S vulkan-swrast)." >&2
exit 1
