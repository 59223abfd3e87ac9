#!/usr/bin/env bash
# Makes sure a Vulkan driver is present so wgpu can find an adapter.
#
# - If a Vulkan ICD manifest (a GPU driver or Mesa) and the Vulkan loader
#   (libvulkan.so.1) are both installed, it does nothing.
# - On Debian/Ubuntu without a driver, it installs Mesa's software driver
#   (`mesa-vulkan-drivers`, which provides lavapipe) and the loader with
#   apt-get, as root or through sudo; with a driver but no loader (as on
#   some GPU containers), only the loader (`libvulkan1`).
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

have_loader() {
  # grep reads all of ldconfig's output (no -q): under pipefail an early
  # exit would fail ldconfig with SIGPIPE, and the match with it.
  if command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null; then
    return 0
  fi
  compgen -G "/usr/lib/*/libvulkan.so.1" >/dev/null 2>&1 || compgen -G "/usr/lib*/libvulkan.so.1" >/dev/null 2>&1
}

case "$(uname -s)" in
  Darwin) echo "ensure-vulkan: macOS uses Metal; nothing to install."; exit 0 ;;
  MINGW*|MSYS*|CYGWIN*) echo "ensure-vulkan: Windows uses DX12/Vulkan from your GPU driver; nothing to install."; exit 0 ;;
esac

if have_icd && have_loader; then
  echo "ensure-vulkan: a Vulkan driver and the Vulkan loader are installed."
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
  if have_icd; then
    echo "ensure-vulkan: a Vulkan driver is installed but not the Vulkan loader; installing libvulkan1."
    packages=(libvulkan1)
  else
    echo "ensure-vulkan: no Vulkan driver found; installing mesa-vulkan-drivers (software lavapipe)."
    packages=(mesa-vulkan-drivers libvulkan1)
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  have_icd && have_loader && { echo "ensure-vulkan: installed."; exit 0; }
  echo "ensure-vulkan: ${packages[*]} installed but no ICD manifest or no libvulkan.so.1 found" >&2
  exit 1
fi

echo "ensure-vulkan: no Vulkan driver found. Install your GPU's Vulkan driver, or Mesa's" >&2
echo "  software driver (Fedora: dnf install mesa-vulkan-drivers; Arch: pacman -S vulkan-swrast)." >&2
exit 1
