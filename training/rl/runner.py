"""``simbridge train ppo|grpo``: RL fine-tuning of a policy in simulation on Ray.

One iteration (RLinf's loop)::

    sync      actor --trainable weights (version v)--> rollout  (the rollout refuses other versions;
              sync/bytes and time/sync are logged)
    rollout   env workers <--obs / actions--> rollout worker, pipelined over env stages
    update    actor: advantages (GAE / group-normalised) + PPO / GRPO update   -> version v + 1
    log       metrics.jsonl + TensorBoard; checkpoint every ``runner.checkpoint_every``

Start on this machine (a private Ray instance with ``cluster.num_cpus`` cores)::

    launch/train_ppo.sh launch/configs/ppo_maniskill.yaml [key=value ...]
    simbridge train ppo --config launch/configs/ppo_maniskill.yaml runner.iterations=200

Start on an existing (multi-node) Ray cluster::

    # on the head node
    ray start --head --port=6379 --num-cpus=16
    # on every other node
    ray start --address=<head-ip>:6379 --num-cpus=16
    # then, from any node
    launch/train_ppo.sh launch/configs/ppo_maniskill.yaml cluster.address=auto \
        cluster.placement=disaggregated env.num_workers=8

Every node needs the same SimBridge checkout / virtualenv (the workers import
``simbridge.training``); the run directory is written by the driver and the checkpoints by
the actor worker, so ``runner.root`` must be on storage both see (or run the driver on the
actor's node). The run checks the configuration against ``ray.cluster_resources()`` before
starting any worker; use ``cluster.strategy=SPREAD`` to spread env workers over nodes. Resume a run with
``runner.resume=<run-dir>`` (it continues from the latest checkpoint's iteration).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from simbridge.data.config import ConfigError
from simbridge.data.runs import RunDir
from simbridge.training.rl.algorithms import ALGORITHMS
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.paths import absolute_paths
from simbridge.training.rl.placement import (
    ResourceShortfall,
    check_resources,
    create_worker_groups,
    resource_plan,
    use_visible_gpus,
)
from simbridge.training.rl.rollout import RolloutCollector, RolloutStats

log = logging.getLogger(__name__)


class ResumePoint(NamedTuple):
    """Where ``runner.resume`` continues a run: its newest complete checkpoint and that iteration."""

    checkpoint: Path
    iteration: int


def resume_point(run_dir: str | Path) -> ResumePoint | None:
    """The run's newest complete checkpoint with its iteration; None when there is none.

    (``simbridge.training.checkpoint.latest_checkpoint`` gives the path alone.)
    """
    from simbridge.training.checkpoint import checkpoint_meta, latest_checkpoint

    path = latest_checkpoint(run_dir)
    if path is None:
        return None
    return ResumePoint(path, int(checkpoint_meta(path)["iteration"]))


def _init_ray(cfg: RLConfig) -> bool:
    """Start or join Ray; returns True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if cfg.cluster.address:
        ray.init(address=cfg.cluster.address, log_to_driver=True)
    else:
        ray.init(
            address="local",  # always a private instance: two runs on one machine never share one by accident
            num_cpus=cfg.cluster.num_cpus or None,
            num_gpus=cfg.cluster.num_gpus,
            include_dashboard=False,
            log_to_driver=True,
        )
    return True


def iteration_metrics(stats: RolloutStats, update: dict[str, float], sync_time: float) -> dict[str, float]:
    eps = stats.episodes
    out: dict[str, float] = {
        "env_steps": stats.env_steps,
        "env_steps_per_s": stats.env_steps / max(stats.wall_time, 1e-9),
        "time/rollout": stats.wall_time,
        "time/env": stats.env_time,
        "time/inference": stats.inference_time,
        "time/update": update.get("update_time", 0.0),
        "time/sync": sync_time,
        "episodes": len(eps),
        "episodes_dropped": stats.dropped_episodes,
        "env_worker_crashes": stats.crashes,
    }
    if eps:
        out["success_rate"] = float(np.mean([e.success for e in eps]))
        out["episode_return"] = float(np.mean([e.episode_return for e in eps]))
        out["episode_length"] = float(np.mean([e.length for e in eps]))
    out.update({k: v for k, v in update.items() if k != "update_time"})
    return out


def train(cfg: RLConfig) -> Path:
    """Run RL training as configured; returns the run directory."""
    import ray

    started = time.perf_counter()
    cfg = absolute_paths(cfg)  # workers on other nodes resolve relative paths against their own cwd
    if cfg.cluster.address is None:
        import torch

        cfg = use_visible_gpus(cfg, torch.cuda.device_count())

    algorithm_cls = ALGORITHMS.get(cfg.algorithm.name)
    if algorithm_cls is None:
        raise ConfigError(f"algorithm.name {cfg.algorithm.name!r} is not registered; choose from {sorted(ALGORITHMS)}")
    resume_from = None
    if cfg.runner.resume:
        if not Path(cfg.runner.resume).is_dir():
            raise ConfigError(f"runner.resume: {cfg.runner.resume} is not a run directory")
        resume_from = resume_point(cfg.runner.resume)
        if resume_from is None:
            raise ConfigError(
                f"runner.resume: {cfg.runner.resume} has no complete checkpoint under checkpoints/iter_*; "
                "start a fresh run instead (runner.resume=null)"
            )

    from simbridge.training.rl.factories import env_contract, env_for_warm_start

    cfg = dataclasses.replace(cfg, env=env_for_warm_start(cfg.env, cfg.policy))
    started_ray = _init_ray(cfg)
    groups = None
    try:
        contract = env_contract(cfg.env)
        # A run the cluster cannot hold stops here, before it leaves an empty run directory behind.
        check_resources(resource_plan(cfg), ray.cluster_resources(), cfg.cluster.placement)
        run = RunDir(cfg.runner.resume, config=cfg) if resume_from else RunDir.create(cfg.runner.root, cfg.runner.name, cfg)
        try:
            groups = create_worker_groups(cfg, contract, episodic=algorithm_cls.episodic, run_dir=str(run.path))
        except BaseException:
            run.close()
            raise
        start = 0
        if resume_from is not None:
            start = resume_from.iteration
            groups.actors.load(str(resume_from.checkpoint))
            log.info("resumed %s from %s (iteration %d)", run.path, resume_from.checkpoint, start)
        with run:
            budget = cfg.runner.time_budget_min
            _loop(cfg, groups, run, contract, algorithm_cls, start, None if budget is None else started + 60 * budget)
        return run.path
    finally:
        if groups is not None:
            groups.shutdown()
        if started_ray:
            ray.shutdown()


def _loop(
    cfg: RLConfig, groups: Any, run: RunDir, contract: Any, algorithm_cls: Any, start: int, deadline: float | None
) -> None:
    import ray
    from tqdm import tqdm

    collector = RolloutCollector(
        cfg, groups.env_workers, groups.rollout, algorithm_cls.episodic, algorithm_cls.uses_critic,
        chunk_size=ray.get(groups.rollout.chunk_size.remote()),
    )
    update_threads = groups.plan.total_cpus if cfg.cluster.placement == "hybrid" else None
    bar = tqdm(range(start, cfg.runner.iterations), initial=start, total=cfg.runner.iterations,
               desc=f"{cfg.algorithm.name} {cfg.runner.name}", disable=not cfg.runner.progress, unit="it")
    for it in bar:
        t0 = time.perf_counter()
        weights = groups.actors.get_weights()
        version = ray.get(groups.rollout.set_weights.remote(weights))
        sync_time = time.perf_counter() - t0

        batch, stats = collector.collect(it, version)
        update = groups.actors.update(batch, update_threads)
        metrics = iteration_metrics(stats, update, sync_time)
        metrics["weights_version"] = version
        if stats.crashes:
            log.warning("iteration %d: %d env worker crash(es), %d episode(s) dropped", it + 1, stats.crashes,
                        stats.dropped_episodes)
        run.log(it + 1, **metrics)
        with open(run.path / "rollout_episodes.jsonl", "a") as f:  # every finished training episode
            f.writelines(json.dumps({"iteration": it + 1, **e.to_dict()}) + "\n" for e in stats.episodes)
        bar.set_postfix(success=f"{metrics.get('success_rate', float('nan')):.2f}",
                        ret=f"{metrics.get('episode_return', float('nan')):.2f}",
                        sps=f"{metrics['env_steps_per_s']:.0f}")
        done = it + 1
        # Stop before an iteration that would end past the deadline (iterations take about as long as the last).
        out_of_time = deadline is not None and time.perf_counter() + (time.perf_counter() - t0) > deadline
        if done % cfg.runner.checkpoint_every == 0 or done == cfg.runner.iterations or out_of_time:
            groups.actors.save(str(run.path), done, _scalars(metrics), {"algorithm": cfg.algorithm.name})
            if cfg.runner.keep_checkpoints:
                from simbridge.training.checkpoint import prune_checkpoints

                prune_checkpoints(run.path, cfg.runner.keep_checkpoints, "success_rate", higher_is_better=True)
        if out_of_time and done < cfg.runner.iterations:
            log.warning("runner.time_budget_min=%s reached after iteration %d of %d: checkpoint saved, stopping "
                        "(continue with runner.resume=%s)", cfg.runner.time_budget_min, done, cfg.runner.iterations,
                        run.path)  # fmt: skip
            break


def _scalars(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)}


# --- CLI: `simbridge train ppo|grpo` ----------------------------------------------------------------


CONFIG = RLConfig
#: ``--resume RUN_DIR``: the flag of runner.resume before options were the config's keys.
ALIASES = {"runner.resume": "--resume"}


def run_config(cfg: RLConfig) -> int:
    """Train as configured (``simbridge train`` parsed the command line); prints the final metrics."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        path = train(cfg)
    except ResourceShortfall as exc:
        raise ConfigError(str(exc)) from None
    summary = _final_summary(path)
    print(json.dumps({"run_dir": str(path), **summary}, indent=2))
    return 0


def _final_summary(path: Path) -> dict:
    from simbridge.data.runs import read_metrics

    records = read_metrics(path)
    last = records[-1] if records else {}
    keys = ("step", "success_rate", "episode_return", "env_steps_per_s", "approx_kl", "clip_fraction")
    return {k: last[k] for k in keys if k in last}
