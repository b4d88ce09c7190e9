"""simbridge_ros: thin rclpy nodes over ``simbridge.deploy`` (camera, franka, twin, policy, logger,
teleop, evaluation orchestrator).

Every node is a class taking its dependencies (robot, camera, policy, writer) either from ROS
parameters or injected from Python, so the same class runs under ``ros2 launch`` (one process per
node, ``main()`` entry points in ``setup.py``) and in ``simbridge deploy`` (all nodes in one process
with a ``MultiThreadedExecutor``). Topic names and message conversions live in :mod:`.common`.
"""
