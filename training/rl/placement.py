"""Placing the worker groups on the Ray cluster: collocated, disaggregated or hybrid.

Resources are expressed as Ray placement-group bundles (CPU cores here, GPUs where present):

* ``collocated``: one bundle shared by every group; the rollout runs phase by phase
  (simulate, then infer), as when env, rollout and actor share the same device.
* ``disaggregated``: one bundle per env worker, one for the rollout, one per actor process
  (``actor.num_workers``); env and rollout are pipelined.
* ``hybrid``: one bundle per env worker and one for the rollout (pipelined); the actor
  shares the rollout's bundle and uses every core of the run while it updates.

The actor processes form one :class:`~.actor_group.ActorGroup` (data parallel, :mod:`.distributed`).

:func:`resource_plan` computes the bundles; :func:`check_resources` compares them with the
cluster *before* anything starts and raises :class:`ResourceShortfall` naming what is missing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from simbridge.data.config import ConfigError
from simbridge.data.spec import PolicyContract
from simbridge.training.rl.actor_group import ActorGroup
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.paths import RunDirUnreachable

log = logging.getLogger(__name__)


class ResourceShortfall(RuntimeError):
    """The configuration asks for more CPUs/GPUs than the Ray cluster has."""


@dataclass
class ResourcePlan:
    bundles: list[dict[str, float]]
    env_bundles: list[int]  # bundle index of each env worker
    rollout_bundle: int
    actor_bundle: int
    shares: dict[str, float]  # CPUs each actor of a group requests inside its bundle
    gpu_shares: dict[str, float]
    breakdown: dict[str, str] = field(default_factory=dict)
    #: Bundle of each actor process (``actor.num_workers``; the first is ``actor_bundle``).
    actor_bundles: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.actor_bundles = self.actor_bundles or [self.actor_bundle]

    @property
    def total_cpus(self) -> float:
        return sum(b.get("CPU", 0.0) for b in self.bundles)

    @property
    def total_gpus(self) -> float:
        return sum(b.get("GPU", 0.0) for b in self.bundles)


def _q(x: float) -> float:
    """Ray accepts fractional resource requests only below 1; above, whole units."""
    return x if x <= 1 else float(int(x))


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus > 0 else {})}


def resource_plan(cfg: RLConfig) -> ResourcePlan:
    env, ro, ac = cfg.env, cfg.rollout, cfg.actor
    w, n = env.num_workers, ac.num_workers
    env_desc = f"env {env.num_workers} worker(s) x {env.cpus_per_worker:g} CPU" + (
        f" + {env.gpus_per_worker:g} GPU" if env.gpus_per_worker > 0 else "")
    if cfg.cluster.placement == "collocated":
        cpus = max(w * env.cpus_per_worker, ro.cpus_per_worker, ac.cpus_per_worker)
        gpus = max(w * env.gpus_per_worker, ro.gpus_per_worker, ac.gpus_per_worker)
        share = _q(cpus / (w + 1 + n))
        users = 2 + (w if env.gpus_per_worker > 0 else 0)  # who shares the GPU(s): rollout, actor (and env)
        return ResourcePlan(
            bundles=[_bundle(cpus, gpus)],
            env_bundles=[0] * w,
            rollout_bundle=0,
            actor_bundle=0,
            actor_bundles=[0] * n,
            shares={"env": share, "rollout": share, "actor": share},
            gpu_shares={"env": gpus / users if env.gpus_per_worker > 0 else 0.0, "rollout": gpus / users,
                        "actor": gpus / users},
            breakdown={"collocated": f"one shared bundle of {cpus:g} CPU = max({env_desc}, rollout, actor)"},
        )
    bundles = [_bundle(env.cpus_per_worker, env.gpus_per_worker) for _ in range(w)]
    bundles.append(_bundle(ro.cpus_per_worker, ro.gpus_per_worker))
    breakdown = {"env": env_desc, "rollout": f"{ro.cpus_per_worker:g} CPU"}
    if cfg.cluster.placement == "disaggregated":
        bundles += [_bundle(ac.cpus_per_worker, ac.gpus_per_worker) for _ in range(n)]
        breakdown["actor"] = f"{n} worker(s) x {ac.cpus_per_worker:g} CPU"
        return ResourcePlan(
            bundles=bundles,
            env_bundles=list(range(w)),
            rollout_bundle=w,
            actor_bundle=w + 1,
            actor_bundles=list(range(w + 1, w + 1 + n)),
            shares={"env": _q(env.cpus_per_worker), "rollout": _q(ro.cpus_per_worker),
                    "actor": _q(ac.cpus_per_worker)},
            gpu_shares={"env": env.gpus_per_worker, "rollout": ro.gpus_per_worker, "actor": ac.gpus_per_worker},
            breakdown=breakdown,
        )
    breakdown["actor"] = "shares the rollout bundle (hybrid)"
    return ResourcePlan(
        bundles=bundles,
        env_bundles=list(range(w)),
        rollout_bundle=w,
        actor_bundle=w,
        actor_bundles=[w] * n,
        shares={"env": _q(env.cpus_per_worker), "rollout": _q(ro.cpus_per_worker / 2),
                "actor": _q(ro.cpus_per_worker / 2 / n)},
        gpu_shares={"env": env.gpus_per_worker, "rollout": ro.gpus_per_worker / 2, "actor": ro.gpus_per_worker / 2},
        breakdown=breakdown,
    )


def check_resources(plan: ResourcePlan, cluster: dict[str, float], placement: str) -> None:
    """Raise :class:`ResourceShortfall` when ``cluster`` (``ray.cluster_resources()``) is too small."""
    problems = []
    for kind, need in (("CPU", plan.total_cpus), ("GPU", plan.total_gpus)):
        have = float(cluster.get(kind, 0.0))
        if need > have + 1e-9:
            problems.append(f"{need:g} {kind} needed but the Ray cluster has {have:g} (short by {need - have:g})")
    biggest = max((b.get("CPU", 0.0) for b in plan.bundles), default=0.0)
    if not problems and biggest > float(cluster.get("CPU", 0.0)):
        problems.append(f"a bundle needs {biggest:g} CPU on one node")
    if problems:
        parts = "; ".join(f"{k}: {v}" for k, v in plan.breakdown.items())
        raise ResourceShortfall(
            f"placement '{placement}' asks for more than the cluster has: {'; '.join(problems)}. "
            f"Requested: {parts}. Fix: lower env.num_workers / *.cpus_per_worker / *.gpus_per_worker, "
            f"choose cluster.placement=hybrid or collocated, raise cluster.num_cpus (local) or add nodes "
            f"(ray start --address=<head>:6379)."
        )


@dataclass
class WorkerGroups:
    env_workers: list[Any]
    rollout: Any
    actor: Any  # rank 0 of the actor group
    placement_group: Any
    plan: ResourcePlan
    #: Every actor process; the runner goes through it (``actor`` alone would leave the others waiting).
    actors: ActorGroup | None = None

    def __post_init__(self) -> None:
        self.actors = self.actors or ActorGroup([self.actor])

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import placement_group_table, remove_placement_group

        for handle in [*self.env_workers, self.rollout, *self.actors.handles]:  # type: ignore[union-attr]
            with contextlib.suppress(Exception):  # already dead: nothing to release
                ray.kill(handle, no_restart=True)
        remove_placement_group(self.placement_group)
        deadline = time.monotonic() + 10.0  # removal is asynchronous: wait so the next run finds the cores free
        while time.monotonic() < deadline:
            if placement_group_table(self.placement_group).get("state") == "REMOVED":
                break
            time.sleep(0.05)


def create_worker_groups(cfg: RLConfig, contract: PolicyContract, episodic: bool, ready_timeout_s: float = 120.0,
                         run_dir: str | None = None):  # fmt: skip
    """Check resources, reserve the placement group and start every worker (blocking until ready).

    With ``run_dir`` every worker first checks it can write and read it; one that cannot fails
    here with :class:`~.paths.RunDirUnreachable`'s message (host, directory, fix).
    """
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from simbridge.training.rl.actor_worker import ActorWorker
    from simbridge.training.rl.workers import EnvWorker, RolloutWorker

    plan = resource_plan(cfg)
    check_resources(plan, ray.cluster_resources(), cfg.cluster.placement)
    pg = placement_group(plan.bundles, strategy=cfg.cluster.strategy)
    try:
        ray.get(pg.ready(), timeout=ready_timeout_s)
    except ray.exceptions.GetTimeoutError:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(pg)
        raise ResourceShortfall(
            f"could not reserve {plan.bundles} within {ready_timeout_s:g} s: the cluster has the resources in "
            f"total but others hold them now (ray.available_resources() = {ray.available_resources()})"
        ) from None

    def strategy(bundle: int) -> PlacementGroupSchedulingStrategy:
        return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=bundle)

    env_cls = ray.remote(EnvWorker)
    env_workers = [
        env_cls.options(
            num_cpus=plan.shares["env"],
            num_gpus=plan.gpu_shares.get("env", 0.0),
            max_restarts=cfg.cluster.env_max_restarts,
            max_task_retries=0,  # a crashed step is not replayed: its episode is dropped
            scheduling_strategy=strategy(plan.env_bundles[i]),
        ).remote(cfg, i, episodic, plan.shares["env"], run_dir)
        for i in range(cfg.env.num_workers)
    ]
    rollout = (
        ray.remote(RolloutWorker)
        .options(num_cpus=plan.shares["rollout"], num_gpus=plan.gpu_shares["rollout"],
                 scheduling_strategy=strategy(plan.rollout_bundle))
        .remote(cfg, contract, plan.shares["rollout"], plan.gpu_shares["rollout"], run_dir)
    )
    actor_cls = ray.remote(ActorWorker)
    actor_handles = [
        actor_cls.options(num_cpus=plan.shares["actor"], num_gpus=plan.gpu_shares["actor"],
                          scheduling_strategy=strategy(bundle))
        .remote(cfg, contract, plan.shares["actor"], plan.gpu_shares["actor"], run_dir, rank)
        for rank, bundle in enumerate(plan.actor_bundles)
    ]  # fmt: skip
    actors = ActorGroup(actor_handles, cfg.actor.parallel)
    groups = WorkerGroups(env_workers, rollout, actor_handles[0], pg, plan, actors)
    try:
        ray.get([w.ping.remote() for w in [*env_workers, rollout, *actor_handles]])
        actors.connect(ready_timeout_s)
    except ray.exceptions.RayActorError as exc:
        groups.shutdown()
        cause = str(exc)
        if "RunDirUnreachable" in cause:  # the worker's own message, not Ray's wrapping of it
            line = next(ln for ln in cause.splitlines() if "cannot write and read the run directory" in ln)
            raise RunDirUnreachable(line.split("RunDirUnreachable: ", 1)[-1].strip()) from None
        raise
    except Exception:
        groups.shutdown()
        raise
    return groups


def use_visible_gpus(cfg: RLConfig, visible: int) -> RLConfig:
    """``cluster.num_gpus`` unset (None): the ``visible`` GPUs of this machine. When there are any and
    no worker asks for one, the rollout and the actor get them (logged); ``0`` keeps the CPU."""
    if cfg.cluster.num_gpus is not None:
        return cfg
    cluster = replace(cfg.cluster, num_gpus=int(visible))
    if visible <= 0 or cfg.rollout.gpus_per_worker > 0 or cfg.actor.gpus_per_worker > 0:
        return replace(cfg, cluster=cluster)
    n = cfg.actor.num_workers
    if n > 1:  # a GPU per actor process and one for the rollout, each in its own bundle
        if cfg.cluster.placement != "disaggregated" or visible < n + 1:
            raise ConfigError(
                f"actor.num_workers={n} with {visible} GPU(s) visible: {n} actor processes need a GPU each and "
                f"the rollout one more, under cluster.placement=disaggregated (have '{cfg.cluster.placement}'). "
                "Set cluster.placement=disaggregated on a machine with enough GPUs, set actor.gpus_per_worker / "
                "rollout.gpus_per_worker yourself, or cluster.num_gpus=0 to train on the CPU"
            )
        log.info("cluster.num_gpus unset and %d GPU(s) visible: the rollout and %d actor processes run on one each",
                 visible, n)  # fmt: skip
        return replace(cfg, cluster=cluster, rollout=replace(cfg.rollout, gpus_per_worker=1.0),
                       actor=replace(cfg.actor, gpus_per_worker=1.0))  # fmt: skip
    # hybrid: the actor shares the rollout's GPU; collocated: one shared GPU; disaggregated: one each
    # (or half of the one GPU each).
    each = 1.0 if cfg.cluster.placement != "disaggregated" or visible >= 2 else 0.5
    rollout, actor = replace(cfg.rollout, gpus_per_worker=each), replace(cfg.actor, gpus_per_worker=each)
    log.info("cluster.num_gpus unset and %d GPU(s) visible: the rollout and the actor run on them (%g GPU each, "
             "placement %s); set cluster.num_gpus=0 to train on the CPU", visible, each, cfg.cluster.placement)
    return replace(cfg, cluster=cluster, rollout=rollout, actor=actor)
