"""Message conversions: contract <-> standard ROS messages (frames, quaternion order, action names)."""

from __future__ import annotations

import numpy as np
import pytest
from simbridge_ros.common import (
    action_to_msg,
    from_stamp,
    image_to_msg,
    joint_state_msg,
    msg_to_action,
    msg_to_image,
    parse_joint_state,
    parse_pose,
    pose_msg,
    to_stamp,
)

from simbridge.data.spec import ACTION_NAMES


def test_pose_keeps_the_contract_wxyz_order_and_ros_xyzw_fields() -> None:
    ee = np.array([0.3, -0.1, 0.5, 0.0, 1.0, 0.0, 0.0], np.float32)  # w=0, x=1: gripper pointing down
    msg = pose_msg(ee, 12.5)
    assert (msg.pose.orientation.x, msg.pose.orientation.w) == (1.0, 0.0) and msg.header.frame_id == "fr3_link0"
    np.testing.assert_allclose(parse_pose(msg), ee)


def test_images_round_trip_and_bgr8_is_converted() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    msg = image_to_msg(rgb, 1.25, "scene")
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("rgb8", 15, "scene")
    np.testing.assert_array_equal(msg_to_image(msg), rgb)
    msg.encoding = "bgr8"
    np.testing.assert_array_equal(msg_to_image(msg), rgb[..., ::-1])
    msg.encoding = "mono16"
    with pytest.raises(ValueError, match="rgb8"):
        msg_to_image(msg)
    with pytest.raises(ValueError, match="RGB uint8"):
        image_to_msg(rgb.astype(np.float32), 0.0, "scene")


def test_actions_carry_source_stamp_and_intervention() -> None:
    a = np.arange(7, dtype=np.float32) / 100
    msg = action_to_msg(a, "teleop:spacemouse", 1_700_000_000.123456, intervention=True)
    assert list(msg.name[:7]) == list(ACTION_NAMES)
    cmd = msg_to_action(msg)
    np.testing.assert_allclose(cmd.action, a)
    assert cmd.source == "teleop:spacemouse" and cmd.intervention
    assert cmd.stamp == pytest.approx(1_700_000_000.123456, abs=1e-6)
    assert cmd.published is None  # a sender that does not say when it published
    # The observation time (stamp) and the publish time travel separately: the filter bounds both.
    both = msg_to_action(action_to_msg(a, "policy:x", 1_700_000_000.0, published=1_700_000_000.25))
    assert both.stamp == pytest.approx(1_700_000_000.0, abs=1e-6) and both.published == pytest.approx(1_700_000_000.25)
    msg.header.frame_id = ""
    with pytest.raises(ValueError, match="command source"):
        msg_to_action(msg)
    msg.header.frame_id, msg.name = "x", ["dx", "dy"]
    with pytest.raises(ValueError, match="lacks"):
        msg_to_action(msg)


def test_joint_states_hold_seven_joints_and_the_gripper_width() -> None:
    q = np.linspace(-1, 1, 7)
    joints, width = parse_joint_state(joint_state_msg(q, 0.06, 3.0))
    np.testing.assert_allclose(joints, q, atol=1e-6)
    assert width == pytest.approx(0.06)
    assert from_stamp(to_stamp(1234.999999999)) == pytest.approx(1234.999999999, abs=2e-9)
    assert from_stamp(to_stamp(1.9999999999)) == pytest.approx(2.0, abs=2e-9)  # rounding carries into sec


def test_spin_nodes_closes_each_node_once_and_a_later_close_nodes_does_not_repeat_it(ros_context) -> None:
    """spin_nodes closes on its way out; ``simbridge deploy``'s cleanup (close_nodes) reaches the
    same nodes again: close() must run exactly once per node, and the nodes keep their own close."""
    from rclpy.node import Node
    from simbridge_ros.common import spin_nodes

    from simbridge.deploy.cli_deploy import close_nodes

    class Counting(Node):
        def __init__(self, name: str) -> None:
            super().__init__(name, context=ros_context)
            self.closed = 0

        def close(self) -> None:
            self.closed += 1

    nodes = [Counting("close_once_a"), Counting("close_once_b")]
    spin_nodes(nodes, context=ros_context, should_stop=lambda: True)
    assert [n.closed for n in nodes] == [1, 1]
    close_nodes(nodes)
    assert [n.closed for n in nodes] == [1, 1]
    assert all("close" not in vars(n) for n in nodes)  # the method is not replaced by a no-op


@pytest.mark.parametrize("count", [1, 2])  # a SingleThreadedExecutor, then a MultiThreadedExecutor
def test_spin_nodes_returns_quietly_when_the_context_is_shut_down_while_it_waits(count: int) -> None:
    """SIGINT from ``ros2 launch`` shuts the context down while spin_once waits: a normal stop, so
    the nodes are closed and no ExternalShutdownException traceback reaches the launch log."""
    import threading

    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from simbridge_ros.common import spin_nodes

    context = Context()
    rclpy.init(context=context)

    class Closing(Node):
        closed = False

        def close(self) -> None:
            self.closed = True

    nodes = [Closing(f"external_shutdown_{count}_{i}", context=context) for i in range(count)]
    timer = threading.Timer(0.5, context.try_shutdown)
    timer.start()
    spin_nodes(nodes, context=context)  # raised ExternalShutdownException before the fix
    timer.join()
    assert all(n.closed for n in nodes)
