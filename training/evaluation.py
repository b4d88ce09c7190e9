"""Evaluation harness: run a policy on named splits with fixed seeds, write results people read.

    from simbridge.training.evaluation import evaluate, load_policy_source
    source = load_policy_source("expert")              # or a checkpoint dir / a bundle dir
    summary = evaluate(source, suite="all", episodes=20, seed=0, run_dir="runs/eval/expert",
                       spec=SimEnvSpec(max_episode_steps=80))   # the environment (default: all defaults)

For every split of the suite, episode ``i`` uses seed ``seed + i``, so two policies evaluated
with the same arguments see exactly the same scenes. A policy returns a chunk of K actions per
call; they are executed as on the robot, by :mod:`simbridge.deploy.chunking` (``spec.chunking``: by
default all K open-loop before the policy is asked again; or the first ``execute_steps`` of each
chunk; or ACT's temporal ensembling). Outputs in ``run_dir``:

* ``episodes.jsonl`` — one line per episode: policy, split, category, seed, episode, success,
  steps, instruction (and task, wall time), ``failure`` (null on success; why the episode failed,
  :mod:`simbridge.training.failure_analysis`, ``unclassified`` outside PutOnTarget) and
  ``failure_detail`` (the distances it was decided from);
* ``summary.json``  — per split, per category and overall success with Wilson 95% intervals,
  grasp rate and failed episodes per failure class (:mod:`simbridge.training.eval_report`);
* ``summary.png``   — per-split success rates with their intervals, and every episode's outcome
  stacked by failure class;
* ``videos/``       — with ``video=True``, mp4s of the first ``video_episodes`` episodes per split.

Policies come from a registry (:data:`POLICY_LOADERS`): ``expert`` (the scripted expert),
``checkpoint`` (a torch checkpoint, :class:`simbridge.training.checkpoint.CheckpointPolicy`) and
``bundle`` (an ONNX bundle, :class:`simbridge.deploy.runtime.BundlePolicy`), each imported lazily.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from simbridge.data.spec import Observation, Policy, PolicyContract
from simbridge.deploy.chunking import ChunkExecutor, RecedingHorizon, from_config
from simbridge.training.envs.spec import SimEnvSpec
from simbridge.training.eval_report import (  # format_table, plot_summary, wilson_interval lived here
    format_table,  # noqa: F401
    plot_summary,
    summarize,
    wilson_interval,  # noqa: F401
)
from simbridge.training.failure_analysis import UNCLASSIFIED, FailureTracker, read_step, supports

# --- policy sources ------------------------------------------------------------------------


@dataclass
class PolicySource:
    """Where a policy comes from: a name for the results, its contract (if fixed) and a factory.

    ``make(env)`` returns the policy for an environment (the expert needs the env; loaded
    policies ignore it). ``contract`` fixes the cameras the environment must render.
    """

    name: str
    make: Callable[[Any], Policy]
    contract: PolicyContract | None = None
    kind: str = ""


def _expert_source(spec: str, **_: Any) -> PolicySource:
    from simbridge.training.envs import make_expert

    return PolicySource(name="expert", make=make_expert, contract=None, kind="expert")


def _checkpoint_source(spec: str, **kwargs: Any) -> PolicySource:
    from simbridge.training.checkpoint import CheckpointPolicy

    policy = CheckpointPolicy(spec, deterministic=kwargs.get("deterministic", True))
    return PolicySource(
        name=f"checkpoint:{policy.policy_id}",
        make=lambda env: policy,
        contract=policy.contract,
        kind="checkpoint",
    )


def _bundle_source(spec: str, **_: Any) -> PolicySource:
    from simbridge.deploy.runtime import BundlePolicy, resolve_bundle

    policy = BundlePolicy(resolve_bundle(spec))
    return PolicySource(
        name=f"bundle:{policy.bundle_id}", make=lambda env: policy, contract=policy.contract, kind="bundle"
    )


def _remote_source(spec: str, **_: Any) -> PolicySource:
    from simbridge.deploy.remote_policy import RemotePolicy

    policy = RemotePolicy(spec)  # a `simbridge serve` process: refuses an unreachable server at once
    return PolicySource(
        name=f"remote:{policy.policy_id}", make=lambda env: policy, contract=policy.contract, kind="remote"
    )


#: ``kind -> loader(spec, **options) -> PolicySource``; add entries for new policy formats.
POLICY_LOADERS: dict[str, Callable[..., PolicySource]] = {
    "expert": _expert_source,
    "checkpoint": _checkpoint_source,
    "bundle": _bundle_source,
    "remote": _remote_source,
}


def detect_policy_kind(spec: str) -> str:
    """``expert``, ``bundle`` (a dir with ``manifest.json`` or a ``latest`` pointer), ``remote``
    (``ws://host:port``: a ``simbridge serve`` process) or ``checkpoint``."""
    if spec in POLICY_LOADERS:
        return spec
    if spec.startswith(("ws://", "wss://")):
        return "remote"
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"policy {spec!r} is neither one of {sorted(POLICY_LOADERS)} nor an existing checkpoint or bundle "
            "directory; pass 'expert', a checkpoint dir (runs/<name>/<stamp>/checkpoints/iter_000100) or a "
            "bundle dir (with manifest.json)"
        )
    if (path / "manifest.json").exists() or (path / "latest").exists():
        return "bundle"
    return "checkpoint"


def load_policy_source(spec: str, kind: str | None = None, **options: Any) -> PolicySource:
    """A :class:`PolicySource` for ``spec`` ('expert', a checkpoint dir or a bundle dir)."""
    kind = kind or detect_policy_kind(spec)
    if kind not in POLICY_LOADERS:
        raise KeyError(f"unknown policy kind {kind!r}; valid kinds: {', '.join(POLICY_LOADERS)}")
    return POLICY_LOADERS[kind](spec, **options)


# --- running episodes --------------------------------------------------------------------


def run_episode(
    env: Any, policy: Policy, seed: int, frames: list | None = None, chunker: ChunkExecutor | None = None
) -> dict:
    """One episode; ``chunker`` turns the policy's chunks into one action per step (default: all
    K actions open-loop, then re-plan).

    Besides success it records ``grasped``: whether the target object was ever held (None when
    the task does not report grasps), the partial progress that tells a policy that never
    reaches the object from one that grasps but misplaces it, and ``failure``: why a failed
    episode failed, from the simulator's privileged state (``None`` on success, ``unclassified``
    for tasks other than PutOnTarget; see :mod:`simbridge.training.failure_analysis`).
    """
    chunker = chunker or RecedingHorizon(_chunk_size(policy, env))
    obs, info = env.reset(seed=seed)
    policy.reset()
    chunker.reset()
    done, steps, success = False, 0, False
    grasped = False if "is_grasped" in info else None
    tracker = FailureTracker() if supports(env) else None
    t0 = time.perf_counter()
    if frames is not None:
        frames.append(_frame(obs))
    while not done:
        action = chunker.act(policy, obs)
        # Mid-chunk observations go unread unless frames are recorded: let the env skip rendering.
        observe = frames is not None or chunker.needs_prediction()
        obs, _, terminated, truncated, info = env.step(action, observe=observe)
        steps += 1
        if tracker is not None:
            tracker.add(read_step(env, action, info))
        if frames is not None:
            frames.append(_frame(obs))
        success = bool(info["success"])
        if grasped is not None:
            grasped = grasped or bool(info.get("is_grasped", False))
        done = terminated or truncated
    report = tracker.classify(success) if tracker is not None else None
    failure = report.failure if report is not None else (None if success else UNCLASSIFIED)
    return {
        "success": success,
        "grasped": grasped,
        "failure": failure,
        "failure_detail": report.detail if report is not None else None,
        "steps": steps,
        "predictions": chunker.num_predictions,
        "instruction": info["instruction"],
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _chunk_size(policy: Any, env: Any) -> int:
    """Actions per prediction: the policy's contract, else the environment's (the expert: 1)."""
    for owner in (policy, env):
        contract = getattr(owner, "contract", None)
        if isinstance(contract, PolicyContract):
            return contract.chunk_size
    return 1


def _frame(obs: Observation) -> np.ndarray:
    imgs = [obs.images[k] for k in sorted(obs.images)]
    h = max(i.shape[0] for i in imgs)
    imgs = [np.pad(i, ((0, h - i.shape[0]), (0, 0), (0, 0))) for i in imgs]
    return np.concatenate(imgs, axis=1)


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 10.0) -> Path:
    """Write RGB frames to an mp4 (OpenCV, mp4v codec)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} (mp4v codec unavailable)")
    try:
        for f in frames:
            writer.write(np.ascontiguousarray(f[..., ::-1]))
    finally:
        writer.release()
    return path


def evaluate(
    policy_factory: PolicySource | Callable[[Any], Policy],
    suite: str | None = "all",
    episodes: int = 10,
    seed: int = 0,
    run_dir: str | Path | None = None,
    video: bool = False,
    *,
    splits: Sequence[str] | None = None,
    spec: SimEnvSpec | None = None,
    env: Any = None,
    video_episodes: int = 2,
    policy_name: str | None = None,
    progress: bool = True,
    **spec_fields: Any,
) -> dict:
    """Evaluate a policy on every split of ``suite`` (or the explicit ``splits``); see module docstring.

    ``policy_factory`` is a :class:`PolicySource` or a callable ``env -> Policy``. The environment
    is ``spec`` (keywords named like its fields, e.g. ``task=`` or ``chunking=``, override it; its
    ``split`` is replaced by each split in turn); pass ``env`` to reuse an existing ``make_env``
    environment instead (its split is switched per split). When the policy has a fixed contract,
    the environment renders the cameras it expects (:meth:`SimEnvSpec.with_contract`).
    """
    from simbridge.training.envs import TASKS, get_split, make_env, resolve_suite

    source = (
        policy_factory
        if isinstance(policy_factory, PolicySource)
        else PolicySource(
            name=policy_name or getattr(policy_factory, "__name__", "policy"), make=policy_factory
        )
    )
    name = policy_name or source.name
    if episodes < 1:
        raise ValueError(f"episodes: at least 1 per split, got {episodes}")
    spec = SimEnvSpec.of(spec, **spec_fields)
    task = spec.task
    split_names = tuple(splits) if splits is not None else resolve_suite(suite or "all")
    uses_splits = TASKS[task].uses_splits if task in TASKS else True
    if not uses_splits:
        split_names = ("train",)
    split_objs = [get_split(s) if uses_splits else None for s in split_names]
    if source.contract is not None:  # render what the policy was trained on
        spec = spec.with_contract(source.contract)
    if video or source.contract is not None:  # videos and policies with cameras need images
        spec = dataclasses.replace(spec, obs_mode="rgb")
    out = Path(run_dir) if run_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    own_env = env is None
    if own_env:
        env = make_env(dataclasses.replace(spec, split=split_names[0]), seed=seed)
    policy = source.make(env)
    chunking = spec.chunking
    chunk_size = source.contract.chunk_size if source.contract is not None else _chunk_size(policy, env)
    chunker = from_config(chunking, chunk_size)
    records: list[dict] = []
    episodes_file = open(out / "episodes.jsonl", "w") if out is not None else None  # noqa: SIM115 - closed below
    bar = tqdm(total=episodes * len(split_names), desc=f"eval {name}", disable=not progress, unit="ep")
    try:
        for split_name, split in zip(split_names, split_objs, strict=True):
            if split is not None:
                env.set_split(split)
            successes = 0
            for i in range(episodes):
                frames: list | None = [] if (video and i < video_episodes) else None
                result = run_episode(env, policy, seed + i, frames, chunker)
                record = {
                    "policy": name,
                    "task": task,
                    "split": split_name,
                    "category": split.category if split is not None else "train",
                    "seed": seed + i,
                    "episode": i,
                    **result,
                }
                records.append(record)
                successes += record["success"]
                if episodes_file is not None:
                    episodes_file.write(json.dumps(record) + "\n")
                    episodes_file.flush()
                if frames and out is not None:
                    write_video(
                        out / "videos" / f"{split_name}_ep{i:03d}_seed{seed + i}.mp4",
                        frames,
                        fps=env.contract.action.control_rate_hz,
                    )
                bar.update(1)
                bar.set_postfix(split=split_name, success=f"{successes}/{i + 1}")
    finally:
        bar.close()
        if episodes_file is not None:
            episodes_file.close()
        if own_env:
            env.close()
    summary = summarize(
        records,
        name,
        {
            "task": task,
            "episodes_per_split": episodes,
            "seed": seed,
            "obs_mode": spec.obs_mode,
            "chunking": {"mode": chunking.mode, "chunk_size": chunk_size,
                         "execute_steps": getattr(chunker, "execute_steps", None),
                         "ensemble_decay": chunking.ensemble_decay if chunking.mode == "ensemble" else None},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_summary(summary, out / "summary.png")
    return summary
