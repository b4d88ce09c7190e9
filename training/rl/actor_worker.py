"""The actor worker of an RL run: the trainable policy, its optimizer, the algorithm's update and
the checkpoints (the env and rollout workers are in :mod:`.workers`). A plain class, made a Ray
actor by :mod:`.placement`; ``actor.num_workers`` of them form a data-parallel group
(:mod:`.distributed`, driven by :class:`~.actor_group.ActorGroup`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from simbridge.data.spec import PolicyContract
from simbridge.training.models.precision import configure_training
from simbridge.training.rl.algorithms import build_algorithm
from simbridge.training.rl.batch import RolloutBatch
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.distributed import DataParallel, free_port, init_process_group
from simbridge.training.rl.factories import build_rl_policy, load_rl_policy
from simbridge.training.rl.paths import check_run_dir
from simbridge.training.rl.ppo import is_critic_parameter
from simbridge.training.rl.weight_sync import WeightPayload, frozen_fingerprint
from simbridge.training.rl.workers import _device, _set_threads


class ActorWorker:
    """The trainable policy, its optimizer and the algorithm's update: one process of the actor group.

    ``actor.parallel=none``: ready at once. ``ddp`` / ``fsdp2``: :meth:`join` the group's process
    group first (:class:`~.actor_group.ActorGroup.connect`); then every method is called on every
    rank with the same arguments, and rank 0's answer counts.
    """

    def __init__(self, cfg: RLConfig, contract: PolicyContract, cpus: float = 1.0, gpus: float = 0.0,
                 run_dir: str | None = None, rank: int = 0):  # fmt: skip
        if run_dir is not None:
            check_run_dir(run_dir, f"actor worker {rank}")
        self.cpus = cpus
        _set_threads(cpus)
        self.cfg = cfg
        self.contract = contract
        self.rank = rank
        self.device = _device(gpus)
        self.policy = build_rl_policy(cfg.policy, contract, seed=cfg.runner.seed).to(self.device)
        configure_training(self.policy, cfg.actor.precision, cfg.actor.gradient_checkpointing)
        self.algorithm = build_algorithm(cfg.algorithm, cfg.actor)
        self.parallel: DataParallel | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if cfg.actor.parallel == "none":
            self._start(DataParallel(self.policy, device=self.device))
        self.version = 0
        self.updates = 0
        self.last_sync: dict[str, float] = {}  # what the last get_weights sent (logged with the update)

    def _start(self, parallel: DataParallel) -> None:
        self.parallel = parallel
        self.optimizer = self._make_optimizer()  # after sharding: fsdp2 replaces the parameters

    def _ready(self) -> DataParallel:
        if self.parallel is None:
            raise RuntimeError(f"actor.parallel={self.cfg.actor.parallel}: this actor worker has not joined its "
                               "process group (ActorGroup.connect / ActorWorker.join)")  # fmt: skip
        return self.parallel

    def _make_optimizer(self) -> torch.optim.Optimizer:
        value, other = [], []
        for name, p in self.policy.named_parameters():
            if p.requires_grad:
                (value if is_critic_parameter(name) else other).append(p)
        groups = [{"params": other, "lr": self.cfg.actor.lr}]
        if value:
            groups.append({"params": value, "lr": self.cfg.actor.value_lr})
        return torch.optim.Adam(groups, eps=1e-5)

    def ping(self) -> str:
        return "actor"

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0: where the actor processes meet (this node's address, a free TCP port)."""
        import ray

        address = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        return address, free_port(address)

    def join(self, address: str, port: int) -> int:
        """Join the actor group's process group at ``address:port`` and wrap the policy for
        ``actor.parallel`` (blocks until all ``actor.num_workers`` processes have joined)."""
        frozen_fingerprint(self.policy)  # of the whole frozen tensors, kept before fsdp2 shards them
        init_process_group(self.rank, self.cfg.actor.num_workers, address, port, self.device)
        self._start(DataParallel(self.policy, self.cfg.actor.parallel, self.device))
        return self.rank

    def get_weights(self) -> WeightPayload | None:
        """The trainable tensors at the current version (:mod:`.weight_sync`); None on ranks > 0."""
        tensors = self._ready().trainable_tensors()
        if tensors is None:
            return None
        payload = WeightPayload(self.version, tensors, frozen_fingerprint(self.policy))
        self.last_sync = {"sync/bytes": float(payload.nbytes), "sync/tensors": float(len(payload.tensors))}
        return payload

    def update(self, batch: RolloutBatch, threads: float | None = None) -> dict[str, float]:
        """One algorithm update on ``batch``; bumps the weights version."""
        parallel = self._ready()
        if threads:  # hybrid placement: the actor takes every device of the run for the update
            _set_threads(threads)
        t0 = time.perf_counter()
        metrics = self.algorithm.update(self.policy, self.optimizer, batch, seed=self.cfg.runner.seed + self.updates,
                                        device=self.device, iteration=self.updates,
                                        temperature=self.cfg.policy.temperature, parallel=parallel)
        self.updates += 1
        self.version += 1
        _set_threads(self.cpus)
        metrics["update_time"] = time.perf_counter() - t0
        metrics.update(self.last_sync)
        return metrics

    def save(self, run_dir: str, iteration: int, metrics: dict, extra: dict) -> str | None:
        """Checkpoint with the optimizer state (atomic, announced to the exporter's watch mode).

        Rank 0 writes it (None elsewhere); fsdp2 gathers the shards first (every rank takes part) into
        a CPU copy of the policy."""
        from simbridge.training.checkpoint import save_checkpoint

        parallel = self._ready()
        optimizer = parallel.optimizer_state_dict(self.optimizer)
        policy = self.policy
        if parallel.mode == "fsdp2":
            full = parallel.full_state_dict()
            if parallel.is_main:
                policy = build_rl_policy(self.cfg.policy, self.contract, seed=self.cfg.runner.seed)
                policy.load_state_dict(full)
        path = None
        if parallel.is_main:
            state = {"optimizer": optimizer, "version": self.version, "updates": self.updates,
                     "actor_parallel": parallel.mode}  # fmt: skip
            path = str(save_checkpoint(policy, Path(run_dir), iteration, metrics, extra, config=self.cfg,
                                       training_state=state))  # fmt: skip
        parallel.barrier()  # on every rank, the checkpoint exists when save returns
        return path

    def load(self, checkpoint: str) -> int:
        """Weights, optimizer state and weights version from a checkpoint (resume; every rank)."""
        from simbridge.training.checkpoint import load_training_state

        parallel = self._ready()
        policy = load_rl_policy(self.cfg.policy, checkpoint)
        parallel.load_full_state_dict(policy.state_dict())
        state = load_training_state(checkpoint)
        if state is not None:
            saved = state.get("actor_parallel", "none")
            if (saved == "fsdp2") != (parallel.mode == "fsdp2"):  # name-keyed vs torch's own layout
                fits = "fsdp2" if saved == "fsdp2" else "none or ddp"
                raise ValueError(f"runner.resume: {checkpoint} holds the optimizer state of actor.parallel={saved}, "
                                 f"which actor.parallel={parallel.mode} cannot read; resume with actor.parallel={fits}")
            parallel.load_optimizer_state_dict(self.optimizer, state["optimizer"])
            self.version, self.updates = int(state["version"]), int(state["updates"])
        return self.version
