"""ROS 2 tests: the simbridge_ros nodes over real DDS on loopback (fixtures in conftest.py)."""
