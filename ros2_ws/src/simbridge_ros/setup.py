"""ament_python package of the SimBridge ROS 2 nodes (``colcon build --packages-select simbridge_ros``).

Console scripts are installed to ``lib/simbridge_ros`` (setup.cfg), where ``ros2 run`` and
launch_ros look for executables. The launch files, the parameter files and the evaluation
protocols live in the repository's ``launch/`` folder; ``launch`` here is a symlink to it, so the
data_files paths stay relative to this package (colcon refuses absolute ones) and the files are
installed to ``share/simbridge_ros/launch`` (``ros2 launch simbridge_ros sim_eval.launch.py``).
"""

from pathlib import Path

from setuptools import setup

PACKAGE = "simbridge_ros"
HERE = Path(__file__).resolve().parent

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
    """``(install dir, [paths relative to this package])`` for the launch, parameter and protocol files."""
    launch = HERE / "launch"
    if not launch.is_dir():  # an sdist without the repository around it
        return []

    def rel(pattern: str) -> list[str]:
        return [f"launch/{p.relative_to(launch)}" for p in sorted(launch.glob(pattern))]

    return [
        (f"share/{PACKAGE}/launch", rel("*.launch.py") + rel("*.yaml")),
        (f"share/{PACKAGE}/launch/protocols", rel("protocols/*.yaml")),
    ]


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
