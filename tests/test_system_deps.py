"""``.ci/system-deps.sh`` on systems other than this one: a GPU node, Ubuntu, a non-Debian system.

The script runs for real; what differs between machines is faked at its boundary: ``/etc/os-release``
and the Vulkan ICD folders (its ``SIMBRIDGE_*`` variables), and ``dpkg-query`` / ``dpkg`` / ``id`` /
``apt-get`` / ``sudo`` as executables first on PATH that answer like the real ones (and record every
apt-get call, which must never happen where the script only advises).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "system-deps.sh"
GL = ("libosmesa6", "libegl1", "libgl1", "libgles2")


def fake_system(tmp: Path, os_release: str, installed: dict[str, str], *, gpu: bool = False,
                dpkg: bool = True) -> dict[str, str]:  # fmt: skip
    """Environment for the script: fake tools in ``tmp/bin``, ``installed`` = package -> version."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (tmp / "os-release").write_text(os_release)
    icd = tmp / "icd.d"
    icd.mkdir()
    if gpu:
        (icd / "nvidia_icd.json").write_text('{"ICD": {"library_path": "libGLX_nvidia.so.0"}}')
    (tmp / "dpkg.db").write_text("".join(f"{name} {version}\n" for name, version in installed.items()))
    tools = {
        "id": "echo 1000",  # not root
        "apt-get": f'echo "$@" >> {tmp}/apt.log',
        "sudo": "exit 1",  # no password-less sudo
    }
    if dpkg:  # dpkg-query -W -f=FORMAT PKG: the version (or the status line); exit 1 when not installed
        tools["dpkg-query"] = f"""fmt=""; pkg=""
for a in "$@"; do case "$a" in -f=*) fmt="${{a#-f=}}";; -W) ;; *) pkg="$a";; esac; done
line=$(grep "^$pkg " {tmp}/dpkg.db) || exit 1
if [[ "$fmt" == *Status* ]]; then echo -n "install ok installed"; else echo -n "${{line#* }}"; fi"""
        tools["dpkg"] = '[[ "$1" == --compare-versions && "${2%%[.~-]*}" -ge "$4" ]]'  # major versions only
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    keep = f"{bin_dir}:/usr/bin:/bin"
    if not dpkg:  # hide the machine's own dpkg-query: a PATH without /usr/bin, but with bash's helpers
        for tool in ("grep", "cat", "sed", "id", "tee"):
            target = bin_dir / tool
            if not target.exists():
                target.symlink_to(f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else f"/bin/{tool}")
        keep = str(bin_dir)
    return {"PATH": keep, "SIMBRIDGE_OS_RELEASE": str(tmp / "os-release"), "SIMBRIDGE_VULKAN_ICD_DIRS": str(icd),
            "HOME": str(tmp)}  # fmt: skip


def run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)


UBUNTU = 'ID=ubuntu\nVERSION_CODENAME=noble\n'
BOOKWORM = 'ID=debian\nVERSION_CODENAME=bookworm\n'


def test_a_gpu_node_does_not_need_mesa(tmp_path):
    env = fake_system(tmp_path, UBUNTU, {p: "1.0" for p in GL}, gpu=True)  # no mesa-vulkan-drivers at all
    out = run(env)
    assert out.returncode == 0, out.stderr
    assert "GPU Vulkan driver found" in out.stdout and "lavapipe is not needed" in out.stdout
    assert not (tmp_path / "apt.log").exists()


def test_ubuntu_is_told_what_to_install_and_its_sources_are_left_alone(tmp_path):
    env = fake_system(tmp_path, UBUNTU, {"libegl1": "1.0"})
    out = run(env)
    assert out.returncode == 1
    assert "Ubuntu (noble): apt sources are left alone" in out.stderr
    assert "sudo apt-get install -y mesa-vulkan-drivers libosmesa6 libegl1 libgl1 libgles2" in out.stderr
    assert "bookworm-backports" not in out.stderr + out.stdout
    assert not (tmp_path / "apt.log").exists()


def test_ubuntu_gpu_node_missing_only_gl_libraries_is_not_sent_to_mesa(tmp_path):
    env = fake_system(tmp_path, UBUNTU, {}, gpu=True)
    out = run(env)
    assert out.returncode == 1
    assert "sudo apt-get install -y libosmesa6 libegl1 libgl1 libgles2" in out.stderr
    assert "mesa-vulkan-drivers" not in out.stderr


def test_debian_bookworm_without_sudo_names_the_backports_install(tmp_path):
    env = fake_system(tmp_path, BOOKWORM, {"mesa-vulkan-drivers": "22.3.6-1", **{p: "1.0" for p in GL}})
    out = run(env)
    assert out.returncode == 1
    assert "mesa-vulkan-drivers (>= 25; found: 22.3.6-1)" in out.stdout
    assert "sudo apt-get install -y -t bookworm-backports mesa-vulkan-drivers" in out.stderr
    assert not (tmp_path / "apt.log").exists()


def test_debian_bookworm_with_everything_is_a_no_op(tmp_path):
    env = fake_system(tmp_path, BOOKWORM, {"mesa-vulkan-drivers": "25.0.7-2~bpo12+1", **{p: "1.0" for p in GL}})
    out = run(env)
    assert out.returncode == 0 and "all present" in out.stdout, out.stderr


@pytest.mark.parametrize("skip", [False, True])
def test_a_system_without_dpkg_gets_its_own_instructions(tmp_path, skip):
    env = fake_system(tmp_path, "ID=fedora\n", {}, dpkg=False)
    if skip:
        env["SIMBRIDGE_SKIP_SYSTEM_DEPS"] = "1"
    out = run(env)
    if skip:
        assert out.returncode == 0 and "skipped" in out.stdout
        return
    assert out.returncode == 1
    assert "not a Debian-family system (fedora)" in out.stderr and "SIMBRIDGE_SKIP_SYSTEM_DEPS=1" in out.stderr
    assert not (tmp_path / "apt.log").exists()


def test_this_machine_passes():
    """The real thing here (Debian 12 with Mesa 25 from backports): nothing to install."""
    out = subprocess.run(["/bin/bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                         env={**os.environ})  # fmt: skip
    assert out.returncode == 0, out.stderr
