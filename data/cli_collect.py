"""``simbridge collect``: teleop demonstrations and HIL-SERL interventions into an episode store.

    simbridge collect --device spacemouse --env PutOnTarget-v1 --out runs/demos/teleop.zarr
    simbridge collect --device keyboard --env PutOnTarget-v1 --out runs/demos/hil.zarr \\
        --mode intervene --policy runs/export/latest --takeover button
    simbridge collect --config collect.yaml episodes=20 mapping.deadzone=0.15 --no-realtime

``--policy`` is ``expert`` (the task's scripted expert), an ONNX bundle directory or a
training checkpoint. Episodes append to ``--out`` (created if missing); each step records who
acted, the executed action and the policy's proposal. On the robot and its simulated twin the
same loop runs behind the ROS 2 teleop node.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import field
from pathlib import Path
from typing import Literal

from simbridge.data.cli_config import add_config_arguments, config_from_args
from simbridge.data.config import ConfigError, config, to_dict
from simbridge.data.teleop.mapping import TeleopMapping


@config
class CollectConfig:
    """``simbridge collect``'s options (``--config FILE``, ``--<field>`` flags, ``key=value``)."""

    #: Input device: keyboard | spacemouse | gamepad | scripted.
    device: str = "keyboard"
    #: Simulation task.
    env: str = "PutOnTarget-v1"
    #: Episode store to append to (created if missing).
    out: str = ""
    #: teleop: pure demonstrations; intervene: the operator takes over from a policy (HIL-SERL).
    mode: Literal["teleop", "intervene"] = "teleop"
    #: 'expert', a bundle directory or a checkpoint directory (mode 'intervene').
    policy: str = ""
    #: How the operator takes over: moving the device, or holding its button.
    takeover: Literal["motion", "button"] = "motion"
    #: Idle device steps after which control returns to the policy.
    handback_idle_steps: int = 5
    #: Episodes to record.
    episodes: int = 10
    #: Environment split.
    split: str = "train"
    #: First episode seed.
    seed: int = 0
    #: Episode step limit.
    max_steps: int = 200
    #: Name recorded with the labels.
    operator: str = "operator"
    #: Camera height and width in pixels.
    camera_size: tuple[int, int] = (128, 128)
    #: "rgb" renders the cameras; "state" skips rendering (black images: smoke tests, CI).
    obs_mode: Literal["rgb", "state"] = "rgb"
    #: Also render the wrist camera.
    wrist_camera: bool = False
    #: Pace the simulation at the control rate so a human can follow (--no-realtime: as fast as possible).
    realtime: bool = True
    #: Steps per committed chunk of the episode store.
    chunk_steps: int = 64
    #: How device deflection becomes an end-effector motion.
    mapping: TeleopMapping = field(default_factory=TeleopMapping)
    #: Extra keyword arguments for the device class (e.g. {"backend": "pynput"}).
    device_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.max_steps < 1:
            raise ValueError("episodes: episodes and max_steps must be at least 1")
        if not self.out:
            raise ValueError("out: the episode store to write (e.g. --out runs/demos/teleop.zarr)")
        if self.mode == "intervene" and not self.policy:
            raise ValueError("policy: mode 'intervene' needs --policy (expert, a bundle or a checkpoint)")


CONFIG = CollectConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, CollectConfig)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="the same as a KEY=VALUE argument (an older spelling)")


def build_config(args: argparse.Namespace) -> CollectConfig:
    return config_from_args(args, CollectConfig, extra_overrides=args.set)


def load_policy(spec: str, env):
    """'expert', an ONNX bundle directory (manifest.json) or a training checkpoint."""
    if spec == "expert":
        from simbridge.training.envs import make_expert

        return make_expert(env), "expert"
    path = Path(spec)
    if not path.exists():
        raise ConfigError(
            f"policy: {spec!r} does not exist; give 'expert', a bundle directory or a checkpoint"
        )
    from simbridge.deploy.runtime import BundlePolicy, resolve_bundle

    bundle = resolve_bundle(path)
    if (bundle / "manifest.json").is_file():
        policy = BundlePolicy(bundle)
        return policy, f"bundle:{policy.bundle_id}"
    from simbridge.training.checkpoint import CheckpointPolicy

    return CheckpointPolicy(path), f"checkpoint:{path.name}"


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    from simbridge.data.store import EpisodeWriter, StoreError
    from simbridge.data.teleop import ActionMapper, Collector, DeviceError, make_device
    from simbridge.training.envs import EnvUnavailable, make_env

    try:
        device = make_device(cfg.device, **cfg.device_options)
    except DeviceError as exc:
        raise ConfigError(f"device: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"device_options: {exc}") from exc
    try:
        env = make_env(task=cfg.env, split=cfg.split, seed=cfg.seed, obs_mode=cfg.obs_mode, camera_size=tuple(cfg.camera_size),
                       wrist_camera=cfg.wrist_camera, max_episode_steps=cfg.max_steps)  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"env: {exc}") from exc
    except EnvUnavailable as exc:
        print(f"simbridge collect: {exc}", file=sys.stderr)
        return 1
    try:
        policy, policy_id = load_policy(cfg.policy, env) if cfg.mode == "intervene" else (None, "teleop")
        with device, EpisodeWriter(cfg.out, env.contract.observation, chunk_steps=cfg.chunk_steps,
                                   robot=f"maniskill:{cfg.env}") as writer:  # fmt: skip
            print(f"collecting {cfg.episodes} episode(s) of {cfg.env} ({cfg.mode}, {cfg.device}) into {cfg.out}; "
                  f"config: {to_dict(cfg)}", file=sys.stderr)  # fmt: skip
            collector = Collector(
                env, device, writer, mode=cfg.mode, policy=policy, mapper=ActionMapper(cfg.mapping, env.contract.action),
                takeover=cfg.takeover, handback_idle_steps=cfg.handback_idle_steps, max_steps=cfg.max_steps,
                operator=cfg.operator, task=cfg.env, split=cfg.split, policy_id=policy_id,
                realtime_hz=env.contract.action.control_rate_hz if cfg.realtime else None,
            )  # fmt: skip
            results = collector.run(cfg.episodes, seed=cfg.seed)
    except (DeviceError, StoreError) as exc:
        print(f"simbridge collect: {exc}", file=sys.stderr)
        return 1
    finally:
        env.close()
    kept = [r for r in results if r.index is not None]
    ok = sum(bool(r.success) for r in kept)
    print(
        f"kept {len(kept)} episode(s) ({ok} successful, {sum(r.interventions for r in kept)} take-overs) in {cfg.out}"
    )
    for r in results:
        if r.aborted:
            print(f"  episode {r.index}: stopped early: {r.aborted}", file=sys.stderr)
    return 1 if any(r.aborted.startswith("device disconnected") for r in results) else 0
