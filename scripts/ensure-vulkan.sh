#!/usr/bin/env bash
# Makes sure a Vulkan driver and the Vulkan loader are present so wgpu can
# find an adapter.
#
# - If a Vulkan ICD manifest (a GPU driver or Mesa) and the Vulkan loader
#   (libvulkan.so.1 for this machine's architecture) are both found, it does
#   nothing.
# - On Debian/Ubuntu without a driver, it installs Mesa's software driver
#   (`mesa-vulkan-drivers`, which provides lavapipe) and the loader with
#   apt-get, as root or through sudo; with a driver but no loader (as on
#   some GPU containers), only the loader (`libvulkan1`).
# - On other Linux distributions it says what to install: it exits 1 without
#   a driver, and 0 with a warning when only the loader was not found (it may
#   live where this script does not look).
# - On macOS (Metal) and Windows (DX12) it exits 0: wgpu needs no Vulkan there.
set -euo pipefail

icd_dirs=(/usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d)
have_icd() {
  for d in "${icd_dirs[@]}"; do
    if compgen -G "$d/*.json" >/dev/null 2>&1; then return 0; fi
  done
  [ -n "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]
}

# The loader for this architecture: ldconfig tags 64-bit libraries with
# their ABI ("libc6,x86-64", "libc6,AArch64"), 32-bit x86 ones with "libc6"
# alone. grep reads all of ldconfig's output (no -q): under pipefail an
# early exit would fail ldconfig with SIGPIPE, and the match with it.
have_loader() {
  local tag='.'
  [ "$(getconf LONG_BIT 2>/dev/null || echo 64)" = 64 ] && tag='64'
  if command -v ldconfig >/dev/null 2>&1 \
    && ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1 ' | grep -- "$tag" >/dev/null; then
    return 0
  fi
  local arch
  arch="$(uname -m)"
  for f in "/usr/lib/$arch-linux-gnu/libvulkan.so.1" /usr/lib64/libvulkan.so.1 /usr/lib/libvulkan.so.1; do
    [ -e "$f" ] && return 0
  done
  return 1
}

case "$(uname -s)" in
  Darwin) echo "ensure-vulkan: macOS uses Metal; nothing to install."; exit 0 ;;
  MINGW*|MSYS*|CYGWIN*) echo "ensure-vulkan: Windows uses DX12/Vulkan from your GPU driver; nothing to install."; exit 0 ;;
esac

if have_icd && have_loader; then
  echo "ensure-vulkan: a Vulkan driver and the Vulkan loader are installed."
  exit 0
fi

if have_icd; then
  missing="Vulkan loader (libvulkan.so.1)"
  packages=(libvulkan1)
else
  missing="Vulkan driver"
  packages=(mesa-vulkan-drivers libvulkan1)
fi

if command -v apt-get >/dev/null 2>&1; then
  . "$(dirname "$0")/apt-install.sh"
  apt_install ensure-vulkan "no $missing found" "${packages[@]}" || exit 1
  have_icd && have_loader && { echo "ensure-vulkan: installed."; exit 0; }
  echo "ensure-vulkan: ${packages[*]} installed but no ICD manifest or no libvulkan.so.1 found" >&2
  exit 1
fi

if have_icd; then
  echo "ensure-vulkan: warning: a Vulkan driver is installed but no $missing was found;" >&2
  echo "  if gpulanes finds no adapter, install your distribution's Vulkan loader (vulkan-loader)." >&2
  exit 0
fi

echo "ensure-vulkan: no Vulkan driver found. Install your GPU's Vulkan driver, or Mesa's" >&2
echo "  software driver (Fedora: dnf install mesa-vulkan-drivers; Arch: pacman -S vulkan-swrast)." >&2
exit 1
