"""policy node -> franka node (safety filter) -> franky -> the twin's arm; refusal of a mismatched bundle."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from simbridge_ros.common import (
    ACTION_TOPIC,
    EE_POSE_TOPIC,
    EXECUTED_ACTION_TOPIC,
    LATCHED,
    POLICY_STATUS_TOPIC,
    RELIABLE,
    msg_to_action,
    parse_pose,
)
from simbridge_ros.franka import FrankaNode
from simbridge_ros.policy import PolicyNode
from simbridge_ros.twin import TwinNode
from std_msgs.msg import String

from simbridge.deploy.runtime import BundlePolicy

from .conftest import Probe, wait_until

pytestmark = [pytest.mark.ros, pytest.mark.robot, pytest.mark.integration, pytest.mark.slow]

INSTRUCTION = "put the red cube on the white plate"


def start_stack(graph, twin, bundle: str, render: int, loaded_machine_limits: str, **policy_params) -> Probe:
    probe = graph.add(Probe(graph.context))
    probe.listen(PoseStamped, EE_POSE_TOPIC, RELIABLE, keep=True)
    probe.listen(JointState, ACTION_TOPIC, 50, keep=True)
    probe.listen(JointState, EXECUTED_ACTION_TOPIC, 50, keep=True)
    probe.listen(String, POLICY_STATUS_TOPIC, LATCHED, keep=True)
    graph.add(TwinNode(twin, context=graph.context, parameter_overrides=[
        Parameter("width", value=render), Parameter("height", value=render)]))
    graph.add(FrankaNode(context=graph.context, parameter_overrides=[
        Parameter("robot_ip", value=twin.hostname), Parameter("sim", value=True),
        Parameter("safety_limits_file", value=loaded_machine_limits)]))
    graph.add(PolicyNode(context=graph.context, parameter_overrides=[
        Parameter("bundle", value=bundle), Parameter("instruction", value=INSTRUCTION),
        Parameter("control_rate_hz", value=10.0), Parameter("camera_timeout_s", value=8.0),
        *(Parameter(k, value=v) for k, v in policy_params.items())]))
    return probe


def statuses(probe: Probe) -> list[dict]:
    return [json.loads(m.data) for _, m in probe.history.get(POLICY_STATUS_TOPIC, [])]


def test_policy_moves_the_twin_arm_through_the_safety_filter(graph, twin, bundle_dir, loaded_machine_limits) -> None:
    # The export dir: the node follows its `latest` pointer.
    probe = start_stack(graph, twin, str(bundle_dir), 128, loaded_machine_limits)
    bundle_id = BundlePolicy(bundle_dir).bundle_id
    wait_until(lambda: any(s["state"] == "running" for s in statuses(probe)), 20, "the policy to verify its cameras")
    p0 = wait_until(lambda: probe.history.get(EE_POSE_TOPIC), 5, "a pose")[0][1]
    wait_until(lambda: len(probe.history.get(EXECUTED_ACTION_TOPIC, [])) >= 12, 20, "12 executed policy actions")
    executed = [msg_to_action(m) for _, m in probe.history[EXECUTED_ACTION_TOPIC]]
    # Commands carry their observation time and their publish time (the pair identifies one command).
    proposed = {(c.stamp, c.published): c.action for c in (msg_to_action(m) for _, m in probe.history[ACTION_TOPIC])}
    assert {c.source for c in executed} == {f"policy:{bundle_id}"}
    for c in executed:  # what ran is what the policy proposed, within the safety filter's limits
        assert (c.stamp, c.published) in proposed and np.all(np.abs(c.action[:3]) <= 0.05 + 1e-6)
        assert c.stamp <= c.published + 1.0  # planned for its observation time + k periods, published after
        assert np.allclose(c.action[:6], proposed[(c.stamp, c.published)][:6], atol=0.02)
    # The new state is observed: the untrained policy drifts consistently, so the arm keeps moving.
    wait_until(lambda: np.linalg.norm(parse_pose(probe.last[EE_POSE_TOPIC])[:3] - parse_pose(p0)[:3]) > 0.002, 15,
               "the end-effector pose to change by 2 mm")


def test_mismatched_bundle_is_refused_before_the_arm_moves(graph, twin, bundle_dir, loaded_machine_limits) -> None:
    # The twin renders 64x64 images; the bundle wants 128x128.
    probe = start_stack(graph, twin, str(bundle_dir / "latest"), 64, loaded_machine_limits)
    refused = wait_until(lambda: next((s for s in statuses(probe) if s["state"] == "refused"), None), 20,
                         "the refusal")
    assert "64x64" in refused["detail"] and "128x128" in refused["detail"]
    poses = wait_until(lambda: len(probe.history.get(EE_POSE_TOPIC, [])) > 20 and probe.history[EE_POSE_TOPIC],
                       5, "poses")
    assert not probe.history.get(ACTION_TOPIC) and not probe.history.get(EXECUTED_ACTION_TOPIC)
    first, last = parse_pose(poses[0][1]), parse_pose(poses[-1][1])
    assert np.linalg.norm(last[:3] - first[:3]) < 1e-3


def test_stale_camera_images_stop_the_policy_from_commanding(graph, twin, bundle_dir, loaded_machine_limits) -> None:
    # Any frame is "too old" with a zero age budget: the node must wait (and say why), never act.
    probe = start_stack(graph, twin, str(bundle_dir), 128, loaded_machine_limits, max_observation_age_s=0.0)
    stalled = wait_until(
        lambda: next((s for s in statuses(probe) if "camera stalled" in s.get("detail", "")), None), 20,
        "the policy to report stale images")
    assert stalled["state"] == "waiting"
    assert not probe.history.get(ACTION_TOPIC) and not probe.history.get(EXECUTED_ACTION_TOPIC)


class SlowedBundle:
    """The real bundle, its inference slowed to ``seconds`` (a larger model on this CPU)."""

    def __init__(self, bundle: BundlePolicy, seconds: float) -> None:
        self.bundle, self.seconds = bundle, seconds
        self.contract, self.bundle_id = bundle.contract, bundle.bundle_id

    def reset(self) -> None:
        self.bundle.reset()

    def predict(self, obs):
        import time

        time.sleep(self.seconds)
        return self.bundle.predict(obs)


@pytest.mark.parametrize("inference", ["async", "sync"])
def test_inference_three_periods_slow_blocks_no_tick_when_async(graph, twin, bundle_dir, loaded_machine_limits,
                                                                 inference) -> None:
    """At 10 Hz with inference slowed to 0.3 s: async ticks keep their period and never wait on the
    model (commands come from the queued chunk, then pause while the model works); sync ticks stall."""
    probe = graph.add(Probe(graph.context))
    probe.listen(JointState, ACTION_TOPIC, 50, keep=True)
    graph.add(TwinNode(twin, context=graph.context))
    franka = graph.add(FrankaNode(context=graph.context, parameter_overrides=[
        Parameter("robot_ip", value=twin.hostname), Parameter("sim", value=True),
        Parameter("safety_limits_file", value=loaded_machine_limits)]))
    policy = graph.add(PolicyNode(SlowedBundle(BundlePolicy(bundle_dir), 0.3), context=graph.context,
                                  parameter_overrides=[
        Parameter("instruction", value=INSTRUCTION), Parameter("control_rate_hz", value=10.0),
        Parameter("inference", value=inference), Parameter("max_observation_age_s", value=2.0),
        Parameter("max_chunk_age_s", value=2.0)]))
    wait_until(lambda: len(probe.history.get(ACTION_TOPIC, [])) >= 10, 60, "10 commands")
    ticks = [(t, d) for t, d in list(policy.ticks) if d > 0][-20:]
    blocked = sum(d > 0.05 for _, d in ticks)
    # Every command's latency record runs forward stage by stage (frame -> ... -> executed), and the
    # model's 0.3 s shows up as the inference stage, not elsewhere.
    executed = {published: (received, done) for published, received, done in franka.trace}
    timings = [t.with_franka(*executed[t.published]) for t in list(policy.trace) if t.published in executed]
    assert len(timings) >= 5
    for t in timings:
        times = [t.captured, t.received, t.assembled, t.inference_start, t.inference_end, t.published,
                 t.franka_received, t.executed]  # fmt: skip
        assert all(b >= a for a, b in itertools.pairwise(times)), t
        assert 0.29 < t.inference_end - t.inference_start < 1.0, t
    if inference == "sync":
        assert blocked >= 2, ticks  # the 0.3 s model runs inside the tick
        return
    assert blocked == 0, f"ticks that waited on the model: {[round(d, 3) for _, d in ticks if d > 0.05]}"
    periods = np.diff([t for t, _ in list(policy.ticks)[-20:]])
    assert abs(float(np.median(periods)) - 0.1) < 0.03, periods
    steps = [msg_to_action(m) for _, m in probe.history[ACTION_TOPIC]]
    assert all(b.stamp > a.stamp for a, b in itertools.pairwise(steps)), "planned times go forward"


def test_bundle_parameter_takes_a_policy_server_url() -> None:
    """``bundle: ws://host:port`` loads a RemotePolicy (an unreachable server is refused with its
    address); with trusted keys a server is refused: only bundles carry signatures."""
    from simbridge_ros.policy import load_bundle_policy

    from simbridge.deploy.bundle import BundleError
    from simbridge.deploy.remote_policy import PolicyServerError

    with pytest.raises(BundleError, match=r"ws://127\.0\.0\.1:1 is a policy server: only bundles carry signatures"):
        load_bundle_policy("ws://127.0.0.1:1", trusted_keys=["keys/lab.pub"])
    with pytest.raises(PolicyServerError, match=r"cannot reach the policy server at ws://127\.0\.0\.1:1 "):
        load_bundle_policy("ws://127.0.0.1:1")
