"""Suite-wide settings: headless rendering, quiet Ray, isolated ROS 2 graphs per session."""

from __future__ import annotations

import os
import random
import tempfile

# Set before any test imports MuJoCo / Ray / rclpy.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A private ROS 2 graph for this test session: random domain, loopback-only discovery, temp logs.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="simbridge-roslog-"))
# Bundle checksum cache and TensorRT engines: per session, not the user's ~/.cache/simbridge.
os.environ.setdefault("SIMBRIDGE_CACHE", tempfile.mkdtemp(prefix="simbridge-cache-"))
