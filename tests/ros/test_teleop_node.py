"""teleop node: a scripted device drives the arm commands; intervention flags follow take-over/hand-back."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from simbridge_ros.common import ACTION_TOPIC, LATCHED, POLICY_ACTION_TOPIC, action_to_msg, msg_to_action
from simbridge_ros.teleop import TELEOP_STATUS_TOPIC, TeleopNode
from std_msgs.msg import String

from simbridge.data.teleop import DeviceState, ScriptedDevice

from .conftest import Probe, wait_until

pytestmark = [pytest.mark.ros, pytest.mark.integration]


def test_intervention_mode_forwards_policy_until_the_operator_takes_over(graph) -> None:
    move = DeviceState(twist=[1.0, 0, 0, 0, 0, 0])
    reads: list[int] = []

    def script(i: int) -> DeviceState:
        reads.append(i)
        return move if 3 <= i < 6 else DeviceState()  # the operator pushes +x for 3 reads

    device = ScriptedDevice(script, disconnect_after=14).connect()
    probe = graph.add(Probe(graph.context))
    probe.listen(JointState, ACTION_TOPIC, 50, keep=True)
    probe.listen(String, TELEOP_STATUS_TOPIC, LATCHED)
    policy_pub = probe.publisher(JointState, POLICY_ACTION_TOPIC)
    params = [Parameter("mode", value="intervention"), Parameter("handback_idle_steps", value=2),
              Parameter("max_policy_action_age_s", value=1.0)]
    node = graph.add(TeleopNode(device, context=graph.context, parameter_overrides=params))
    probe.wait_for_subscriber(POLICY_ACTION_TOPIC)
    # The policy proposes -y every tick (published from the test at the node's rate, lock-step on its reads).
    proposal = np.array([0.0, -0.01, 0.0, 0.0, 0.0, 0.0, 1.0], np.float32)
    last_read = -1
    while node.failed == "" and len(reads) < 15:
        if reads and reads[-1] != last_read:
            last_read = reads[-1]
            policy_pub.publish(action_to_msg(proposal, "policy:p1", time.time()))
        time.sleep(0.005)
    wait_until(lambda: node.failed, 5, "the scripted disconnect")
    commands = [msg_to_action(m) for _, m in probe.history[ACTION_TOPIC]]
    assert {c.source for c in commands} == {"teleop:scripted"}  # the one commander
    flags = [c.intervention for c in commands]
    operator = [c for c in commands if c.intervention]
    policy = [c for c in commands if not c.intervention]
    assert operator and policy
    assert all(c.action[0] > 0.0 and c.action[1] == 0.0 for c in operator[:3])  # mapped device deflection
    assert all(np.allclose(c.action, proposal) for c in policy)
    # take-over, then hand-back on the 2nd idle read: False ... True x (3 moving + 1 idle) ... False
    first = flags.index(True)
    assert flags[first:first + 4] == [True] * 4 and not any(flags[first + 4:]) and not any(flags[:first])
    assert len(flags) - first - 4 >= 3  # the policy drove again after the hand-back
    status = wait_until(lambda: json.loads(probe.last[TELEOP_STATUS_TOPIC].data).get("failed") and
                        json.loads(probe.last[TELEOP_STATUS_TOPIC].data), 3, "the failure in the status")
    assert "disconnected" in status["failed"] and status["takeovers"] == 1
    n = len(probe.history[ACTION_TOPIC])
    time.sleep(0.3)  # three control periods: a failed device publishes nothing more (fail closed)
    assert len(probe.history[ACTION_TOPIC]) == n
