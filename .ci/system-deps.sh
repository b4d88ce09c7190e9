#!/usr/bin/env bash
# System packages SimBridge needs, installed only when missing (idempotent).
#  - SAPIEN (ManiSkill3) needs a Vulkan device. With a GPU and its driver (NVIDIA's Vulkan ICD) that
#    is the GPU, and Mesa is not needed. Without one it is Mesa's lavapipe, and Debian 12's Mesa 22.3
#    lavapipe is too old (no descriptorBindingPartiallyBound): Mesa >= 25 (Debian 12:
#    bookworm-backports, added here; Debian 13 ships it).
#  - MuJoCo (franky-sim twin, LIBERO) renders headless through EGL or OSMesa.
# Only Debian gets its apt sources changed; other systems (Ubuntu GPU nodes are common) are told
# what to install. SIMBRIDGE_SKIP_SYSTEM_DEPS=1 skips the check (you installed them another way).
# SIMBRIDGE_OS_RELEASE / SIMBRIDGE_VULKAN_ICD_DIRS point elsewhere (tests).
set -euo pipefail

if [[ "${SIMBRIDGE_SKIP_SYSTEM_DEPS:-0}" == "1" ]]; then
  echo "[system-deps] skipped (SIMBRIDGE_SKIP_SYSTEM_DEPS=1)"
  exit 0
fi

os_release=${SIMBRIDGE_OS_RELEASE:-/etc/os-release}
icd_dirs=${SIMBRIDGE_VULKAN_ICD_DIRS:-/usr/share/vulkan/icd.d /etc/vulkan/icd.d}
os_id=$(. "$os_release" 2>/dev/null && echo "${ID:-unknown}") || os_id=unknown
codename=$(. "$os_release" 2>/dev/null && echo "${VERSION_CODENAME:-}") || codename=""
gl_pkgs=(libosmesa6 libegl1 libgl1 libgles2)

gpu_vulkan=""
for dir in $icd_dirs; do
  for icd in "$dir"/nvidia_icd*.json; do
    [[ -e "$icd" ]] && gpu_vulkan="$icd"
  done
done

if ! command -v dpkg-query >/dev/null; then
  cat >&2 <<MSG
[system-deps] not a Debian-family system ($os_id): install these with your package manager, then
re-run with SIMBRIDGE_SKIP_SYSTEM_DEPS=1:
  - Vulkan: your GPU's driver, or Mesa >= 25 (lavapipe) without a GPU;
  - OSMesa and EGL (MuJoCo's headless rendering): Fedora: mesa-libOSMesa mesa-libEGL; Arch: mesa.
MSG
  exit 1
fi

need=()
mesa_version=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [[ -n "$gpu_vulkan" ]]; then
  echo "[system-deps] GPU Vulkan driver found ($gpu_vulkan): SAPIEN renders on the GPU, Mesa's lavapipe is not needed"
elif [[ -z "$mesa_version" ]] || ! dpkg --compare-versions "$mesa_version" ge 25; then
  need+=("mesa-vulkan-drivers (>= 25; found: ${mesa_version:-none})")
fi
for pkg in "${gl_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done

if [[ ${#need[@]} -eq 0 ]]; then
  echo "[system-deps] all present (${gpu_vulkan:+GPU Vulkan, }${mesa_version:+mesa-vulkan-drivers $mesa_version, }osmesa, egl)"
  exit 0
fi
echo "[system-deps] missing: ${need[*]}"

# What to install, per system (the packages, and where Mesa >= 25 comes from).
pkgs=("${gl_pkgs[@]}")
[[ -z "$gpu_vulkan" ]] && pkgs=(mesa-vulkan-drivers "${pkgs[@]}")
apt_target=()
case "$os_id/$codename" in
  debian/bookworm) [[ -z "$gpu_vulkan" ]] && apt_target=(-t bookworm-backports) ;;
  debian/*) ;;
  ubuntu/*)
    cat >&2 <<MSG
[system-deps] Ubuntu ($codename): apt sources are left alone. Install:
  sudo apt-get install -y ${pkgs[*]}
$( [[ -z "$gpu_vulkan" ]] && echo "  Mesa >= 25 for lavapipe (no GPU): e.g. the kisak-mesa PPA; with an NVIDIA GPU, its driver (nvidia-driver-*) instead." )
Then re-run make.
MSG
    exit 1 ;;
  *)
    cat >&2 <<MSG
[system-deps] $os_id${codename:+ ($codename)}: not Debian, apt sources are left alone. Install:
  ${pkgs[*]} (Mesa >= 25 for lavapipe, or your GPU's Vulkan driver), then re-run make.
MSG
    exit 1 ;;
esac

if [[ $(id -u) -ne 0 ]]; then
  SUDO=""
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
  if [[ -z "$SUDO" ]]; then
    {
      echo "[system-deps] not root and no password-less sudo: install these yourself, then re-run make:"
      [[ ${#apt_target[@]} -gt 0 ]] && echo "  # add bookworm-backports to the Suites: line of /etc/apt/sources.list.d/debian.sources, then"
      echo "  sudo apt-get update"
      echo "  sudo apt-get install -y ${apt_target[*]} ${pkgs[*]}"
    } >&2
    exit 1
  fi
else
  SUDO=""
fi

if [[ ${#apt_target[@]} -gt 0 ]] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
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
$SUDO apt-get install -y -qq "${apt_target[@]}" "${pkgs[@]}" >/dev/null
echo "[system-deps] installed: ${pkgs[*]}"
