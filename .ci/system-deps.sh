#!/usr/bin/env bash
# Debian packages SimBridge needs, installed only when missing (idempotent).
#  - SAPIEN (ManiSkill3) needs a Vulkan device: on a machine without a GPU that is Mesa's
#    lavapipe, and Debian 12's Mesa 22.3 lavapipe is too old (no descriptorBindingPartiallyBound),
#    so Mesa 25 comes from Debian's bookworm-backports suite.
#  - MuJoCo (franky-sim twin, LIBERO) renders headless through EGL or OSMesa.
set -euo pipefail

need=()
mesa_version=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [[ -z "$mesa_version" ]] || ! dpkg --compare-versions "$mesa_version" ge 25; then
  need+=("mesa-vulkan-drivers (>= 25, from bookworm-backports; found: ${mesa_version:-none})")
fi
for pkg in libosmesa6 libegl1 libgl1 libgles2; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done

if [[ ${#need[@]} -eq 0 ]]; then
  echo "[system-deps] all present (mesa-vulkan-drivers $mesa_version, osmesa, egl)"
  exit 0
fi
echo "[system-deps] missing: ${need[*]}"

if [[ $(id -u) -ne 0 ]]; then
  SUDO=""
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
  if [[ -z "$SUDO" ]]; then
    cat >&2 <<MSG
[system-deps] not root and no password-less sudo: install these yourself, then re-run make:
  # add bookworm-backports to the Suites: line of /etc/apt/sources.list.d/debian.sources, then
  sudo apt-get update
  sudo apt-get install -y -t bookworm-backports mesa-vulkan-drivers libosmesa6 libegl1 libgl1 libgles2
(On a machine with an NVIDIA GPU and its driver, SAPIEN uses the GPU's Vulkan instead.)
MSG
    exit 1
  fi
else
  SUDO=""
fi

if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    echo "[system-deps] enabling bookworm-backports in /etc/apt/sources.list.d/debian.sources"
    $SUDO sed -i '0,/^Suites: bookworm bookworm-updates$/s//Suites: bookworm bookworm-updates bookworm-backports/' \
      /etc/apt/sources.list.d/debian.sources
  fi
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/backports.list >/dev/null
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libosmesa6 libegl1 libgl1 libgles2 >/dev/null
echo "[system-deps] installed: $(dpkg-query -W -f='mesa-vulkan-drivers ${Version}' mesa-vulkan-drivers)"
