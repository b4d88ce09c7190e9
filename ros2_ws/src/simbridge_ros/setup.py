"""ament_python package of the SimBridge ROS 2 nodes (``colcon build --packages-select simbridge_ros``).

Console scripts are installed to ``lib/simbridge_ros`` (setup.cfg), where ``ros2 run`` and
launch_ros look for executables. The launch and parameter files live in the repository's
``launch/`` folder and are installed to ``share/simbridge_ros/launch``.
"""

from pathlib import Path

from setuptools import setup

PACKAGE = "simbridge_ros"
HERE = Path(__file__).resolve().parent
REPO_LAUNCH = HERE.parents[2] / "launch"

NODES = {
    "camera": "camera",
    "franka": "franka",
    "twin": "twin",
    "policy": "policy",
    "logger": "logger",
    "teleop": "teleop",
    "orchestrator": "orchestrator",
}


def launch_files() -> list[tuple[str, list[str]]]:
    if not REPO_LAUNCH.is_dir():  # building from an sdist without the repository around it
        return []
    rel = lambda p: str(p.relative_to(HERE)) if p.is_relative_to(HERE) else str(p)  # noqa: E731
    files = [rel(p) for p in sorted(REPO_LAUNCH.glob("*.launch.py")) + sorted(REPO_LAUNCH.glob("*.yaml"))]
    protocols = [rel(p) for p in sorted((REPO_LAUNCH / "protocols").glob("*.yaml"))]
    return [(f"share/{PACKAGE}/launch", files), (f"share/{PACKAGE}/launch/protocols", protocols)]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml", "README.md"]),
        *launch_files(),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="SimBridge maintainers",
    maintainer_email="maintainers@simbridge.dev",
    description="SimBridge ROS 2 nodes over simbridge.deploy",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{exe} = {PACKAGE}.{mod}:main" for exe, mod in NODES.items()]},
)
