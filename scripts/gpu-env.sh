# Sourced by the scripts that run on a lent GPU machine (no Rust, no Vulkan
# loader installed there). Unpacks the binaries carried packed in
# .devbin/bins.tar.gz (scripts/gpu-prepare.sh packs them, since a run
# carries 64 MiB at most) into .devrun/, a folder that is not carried, where
# they are not unpacked yet, and sets $devbin to the folder that holds them
# (.devrun/, or .devbin/ where binaries were carried unpacked). Unpacks the
# Vulkan loader carried in .gl/*.deb when libvulkan.so.1 is missing (as
# root), and points VK_DRIVER_FILES at NVIDIA's ICD manifest when it is
# unset. Expects $root (the checkout).
packed="$root/.devbin/bins.tar.gz"
devbin="$root/.devbin"
if [ -f "$packed" ]; then
  devbin="$root/.devrun"
  if [ ! -x "$devbin/gpulanes" ] || [ "$packed" -nt "$devbin/gpulanes" ]; then
    echo "gpu-env: unpacking the binaries from .devbin/bins.tar.gz into .devrun/" >&2
    rm -rf "$devbin" && mkdir -p "$devbin" && tar -xzmf "$packed" -C "$devbin"
  fi
fi
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  if compgen -G "$root/.gl/*.deb" >/dev/null; then
    echo "gpu-env: unpacking the Vulkan loader from .gl/" >&2
    for f in "$root"/.gl/*.deb; do dpkg -x "$f" / ; done
    ldconfig
  fi
fi
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
  for d in /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
    if [ -f "$d/nvidia_icd.json" ]; then export VK_DRIVER_FILES="$d/nvidia_icd.json"; break; fi
  done
fi
