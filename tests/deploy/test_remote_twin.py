"""A twin episode driven by ``simbridge serve`` acts as the exported bundle would (issue #23).

The ROS-free deploy loop (:class:`~simbridge.data.teleop.Collector` with a policy in charge, over
:class:`~simbridge.data.teleop.robot_env.RobotEnv`: franky -> franky-sim, the MuJoCo twin, its
cameras) runs a few control steps with the policy served over ``ws://`` by a real ``simbridge
serve`` process, and records the episode to a zarr store as it always does (each step's
observation and ``policy_action``, the row of the served chunk it executed). Then the *recorded*
observations go through the ONNX bundle exported from the same checkpoint: its chunks must equal
the served ones within the manifest's parity tolerance, and the served chunks must equal the
checkpoint's own deterministic actions exactly. Another checkpoint's actions differ far beyond
that tolerance, so the comparison would catch a server running the wrong weights.

The checkpoint is the micro OFT of test_remote_policy.py with its continuous regression head: a
random-init policy's token logits are near ties, so float noise between torch and onnxruntime
could flip a bin on an observation nobody chose (see test_export_levers.py); continuous actions
keep the comparison about the weights served, not about ties.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_remote_policy import CONTRACT, MICRO, start_server, stop  # same directory, on sys.path

from simbridge.data.spec import Observation
from simbridge.data.store import EpisodeStore, EpisodeWriter
from simbridge.deploy.export import ExportOptions, export_checkpoint
from simbridge.deploy.remote_policy import RemotePolicy
from simbridge.deploy.runtime import BundlePolicy

pytestmark = [pytest.mark.robot, pytest.mark.integration]

STEPS = 8  # two chunks of CONTRACT.chunk_size = 4 at 10 Hz


def save_micro(root: Path, seed: int) -> Path:
    from simbridge.training.checkpoint import save_checkpoint
    from simbridge.training.models import build_policy

    policy = build_policy(
        "openvla-oft", "tiny", contract=CONTRACT, seed=seed, use_regression_head=True, **MICRO
    )
    return save_checkpoint(policy, root / f"run{seed}", 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_micro(tmp_path_factory.mktemp("twin-serve"), seed=3)


@pytest.fixture(scope="module")
def server(checkpoint: Path) -> Iterator[str]:
    proc, url = start_server(checkpoint, "--dtype", "fp32")
    yield url
    stop(proc)


class Recorded:
    """The served policy, keeping what the deploy loop asked it and what it answered (test side only)."""

    def __init__(self, policy: RemotePolicy) -> None:
        self.policy, self.contract = policy, policy.contract
        self.calls: list[tuple[Observation, np.ndarray]] = []

    def reset(self) -> None:
        self.policy.reset()

    def predict(self, obs: Observation) -> np.ndarray:
        chunk = self.policy.predict(obs)
        self.calls.append((obs, chunk.copy()))
        return chunk


def run_twin_episode(url: str, store: Path) -> Recorded:
    """``STEPS`` control steps of the policy at ``url`` on the franky-sim twin, recorded into ``store``."""
    from simbridge.data.teleop import Collector, ScriptedDevice
    from simbridge.data.teleop.robot_env import RobotEnv
    from simbridge.deploy.franky_config import FrankyRobotConfig
    from simbridge.deploy.franky_robot import FrankyRobot
    from simbridge.deploy.twin import TwinSim

    policy = Recorded(RemotePolicy(url, contract=CONTRACT))
    sizes = {cam.name: cam.shape[:2] for cam in CONTRACT.observation.cameras}
    with (
        TwinSim(seed=0) as twin,
        FrankyRobot(FrankyRobotConfig(host=twin.hostname, sim=True), clock=twin.clock) as robot,
        EpisodeWriter(store, CONTRACT.observation, software_version="test") as writer,
    ):
        cameras = {name: (lambda n=name, s=size: twin.render(n, size=s)) for name, size in sizes.items()}
        env = RobotEnv(
            robot,
            cameras,
            CONTRACT,
            reset_fn=lambda seed: twin.reset(seed=seed).instruction,
            clock=twin.clock,
            sleep=twin.wait,
        )
        # The policy acts at every step: an idle device, and only its button would take over.
        collector = Collector(
            env,
            ScriptedDevice().connect(),
            writer,
            mode="intervene",
            policy=policy,
            takeover="button",
            max_steps=STEPS,
            policy_id=policy.policy.policy_id,
        )
        result = collector.run_episode(seed=2)
        assert (result.steps, result.aborted, result.intervention_steps) == (STEPS, "", 0), result
        assert robot.num_sent == STEPS
    policy.policy.close()
    return policy


def recorded_observations(store: Path, steps: list[int]) -> list[Observation]:
    """The observations of episode 0 at ``steps``, as the zarr store holds them."""
    episodes = EpisodeStore(store)
    ep, meta = episodes.episode(0), episodes.meta(0)
    return [
        Observation(
            images={c.name: np.asarray(ep[f"image_{c.name}"][t]) for c in CONTRACT.observation.cameras},
            ee_pose=np.asarray(ep["ee_pose"][t]),
            gripper_width=float(ep["gripper_width"][t]),
            joint_positions=np.asarray(ep["joint_positions"][t]),
            instruction=meta.instruction,
            timestamp=float(ep["timestamp"][t]),
        )
        for t in steps
    ]


def test_twin_run_through_the_policy_server_acts_as_the_local_bundle(
    server, checkpoint, tmp_path: Path
) -> None:
    from simbridge.training.checkpoint import CheckpointPolicy

    store = tmp_path / "twin.zarr"
    served = run_twin_episode(server, store)

    # What the store recorded is what the server saw and answered: a chunk per chunk_size steps.
    k = CONTRACT.chunk_size
    starts = list(range(0, STEPS, k))
    assert len(served.calls) == len(starts)
    episodes = EpisodeStore(store)
    ep = episodes.episode(0)
    assert not ep["intervention"].any()
    chunks = np.asarray(ep["policy_action"]).reshape(len(starts), k, 7)  # executed rows of each served chunk
    np.testing.assert_array_equal(chunks, np.stack([chunk for _, chunk in served.calls]))
    observations = recorded_observations(store, starts)
    for (sent, _), stored in zip(served.calls, observations, strict=True):
        for name in sent.images:
            np.testing.assert_array_equal(stored.images[name], sent.images[name])
        np.testing.assert_array_equal(stored.ee_pose, sent.ee_pose)
        np.testing.assert_array_equal(stored.joint_positions, sent.joint_positions)
        assert stored.gripper_width == pytest.approx(sent.gripper_width, abs=1e-7)  # stored as float32
        assert stored.instruction == sent.instruction and stored.instruction.startswith("put the")
    # A real episode: the arm moved under the served actions between the two observations (the
    # twin holds still to well under 0.2 mm at rest; this checkpoint's small actions moved it ~1 mm).
    assert np.abs(observations[1].ee_pose[:3] - observations[0].ee_pose[:3]).max() > 2e-4

    # The server ran this checkpoint, deterministically: its own actions, bit for bit.
    local = CheckpointPolicy(checkpoint)
    np.testing.assert_array_equal(chunks, np.stack([local.predict(obs) for obs, _ in served.calls]))

    # The bundle exported from it, fed the recorded observations, agrees within its parity tolerance.
    exported = export_checkpoint(
        checkpoint, tmp_path / "bundle", options=ExportOptions(parity_samples=2), progress=lambda _: None
    )
    tolerance = exported.manifest["parity"]["tolerance"]
    assert (
        exported.manifest["source"]["checkpoint_sha256"]
        == served.policy.description["source"]["checkpoint_sha256"]
    )
    bundle = BundlePolicy(exported.bundle)
    np.testing.assert_allclose(
        np.stack([bundle.predict(obs) for obs in observations]), chunks, rtol=0, atol=tolerance
    )

    # The comparison can fail: another checkpoint's actions on the same observations are far off.
    other = CheckpointPolicy(save_micro(tmp_path, seed=4)).predict_batch(observations)
    assert np.abs(other - chunks).max() > 100 * tolerance
