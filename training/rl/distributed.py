"""Data parallelism of the actor: its processes share every minibatch, the update is one process's.

``actor.parallel`` chooses how the ``actor.num_workers`` processes hold the policy:

* ``none``: one process, the policy as it is (:class:`DataParallel` with a world of one).
* ``ddp``: a full copy per process; torch's DistributedDataParallel all-reduces (averages) the
  gradients in the backward pass.
* ``fsdp2``: torch's ``fully_shard``: parameters, gradients and Adam state are split across the
  processes (each repeated block of the model, e.g. a decoder layer, is gathered only while it runs).

Every process receives the whole rollout batch and draws the same minibatch order (same seed);
process ``r`` takes its ``1/N`` slice of each minibatch, in micro-batches of at most
``actor.micro_batch_size`` (gradient accumulation). Each micro-batch's mean loss is weighted by its
share of the minibatch, so the accumulated, averaged gradient is the gradient of the minibatch's mean
loss: the same update as one process on the whole minibatch, whatever N and the micro-batch size.

What sharding changes is kept here: gradient clipping on sharded gradients (DTensors), full
tensors gathered for weight sync and checkpoints (collectives: every process calls them, rank 0
keeps the result), the optimizer state of ``fsdp2`` keyed by parameter name. Only trainable
parameters take part in gradient sync and the optimizer (LoRA's frozen base is broadcast once).
The process group: gloo on the CPU, NCCL on CUDA, rendezvous at rank 0's address (TCP).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

PARALLEL_MODES = ("none", "ddp", "fsdp2")
#: The name the policy has inside the wrapper that DDP / fully_shard wrap (stripped from state dicts).
_INNER = "policy."


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the rendezvous of a process group binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def init_process_group(rank: int, world_size: int, address: str, port: int, device: torch.device,
                       timeout_s: float = 600.0) -> None:  # fmt: skip
    """Join the actor's process group (blocks until all ``world_size`` processes have joined).

    A process already in a group of that size keeps it (a test runs several workers in turn)."""
    if dist.is_initialized():
        if dist.get_world_size() != world_size:
            raise RuntimeError(
                f"this process is in a process group of {dist.get_world_size()}, not {world_size}"
            )
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))  # fmt: skip


class _Evaluate(nn.Module):
    """DDP and fully_shard hook their gradient sync and parameter gathering on ``forward``; the
    algorithms call ``policy.evaluate``, so it is routed through this module's forward."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, obs: dict[str, torch.Tensor], tokens: torch.Tensor, temperature: float) -> Any:
        return self.policy.evaluate(obs, tokens, temperature=temperature)


def _fully_shard() -> Any:
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


def _tensors(output: Any) -> list[torch.Tensor]:
    """The tensors of a forward's output (a tensor, a dataclass, a tuple/list, a dict)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        output = [getattr(output, f.name) for f in dataclasses.fields(output)]
    elif isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def _local(t: torch.Tensor) -> torch.Tensor:
    """A full tensor (an FSDP2 DTensor gathered from every process: a collective)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class DataParallel:
    """How one actor process evaluates, syncs gradients and reads/writes weights (world of one: no-ops)."""

    def __init__(self, policy: nn.Module, mode: str = "none", device: torch.device | str = "cpu"):
        if mode not in PARALLEL_MODES:
            raise ValueError(f"actor.parallel: one of {PARALLEL_MODES}, got {mode!r}")
        self.policy, self.mode, self.device = policy, mode, torch.device(device)
        distributed = mode != "none"
        if distributed and not dist.is_initialized():
            raise RuntimeError(f"actor.parallel={mode}: join the process group first (init_process_group)")
        self.rank = dist.get_rank() if distributed else 0
        self.world_size = dist.get_world_size() if distributed else 1
        self.module: nn.Module | None = None
        if mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            # find_unused_parameters: GRPO's loss leaves the value head out; LoRA's base is frozen.
            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self.module = DistributedDataParallel(
                _Evaluate(policy), device_ids=ids, find_unused_parameters=True
            )
        elif mode == "fsdp2":
            self.module = self._shard(policy)

    def _shard(self, policy: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh

        fully_shard = _fully_shard()
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        # Each repeated block (decoder / ViT layers: the elements of a ModuleList) is its own unit,
        # gathered only while it runs; the rest of the policy is gathered with the root.
        for module in policy.modules():
            if isinstance(module, nn.ModuleList):
                for block in module:
                    if any(True for _ in block.parameters()):
                        fully_shard(block, mesh=mesh)
        wrapper = _Evaluate(policy)
        fully_shard(wrapper, mesh=mesh)
        return wrapper

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- the update ------------------------------------------------------------------------------
    def evaluate(self, obs: dict[str, torch.Tensor], tokens: torch.Tensor, temperature: float) -> Any:
        if self.module is None:
            return self.policy.evaluate(obs, tokens, temperature=temperature)
        return self.module(obs, tokens, temperature)

    def micro_batches(self, n: int, micro_batch_size: int | None) -> list[tuple[np.ndarray, float]]:
        """This process's rows of a minibatch of ``n`` rows, as ``(rows, weight)`` micro-batches.

        ``weight`` is the micro-batch's share of the minibatch (its mean loss times it sums to the
        minibatch's mean). Every process gets the same number of micro-batches (the collectives of
        the backward pass pair up); one with no rows left evaluates row 0 with weight 0.
        """
        per_rank = math.ceil(n / self.world_size)
        count = max(1, math.ceil(per_rank / (micro_batch_size or per_rank)))
        mine = np.array_split(np.arange(n), self.world_size)[self.rank]
        out = []
        for rows in np.array_split(mine, count):
            out.append((rows, len(rows) / n) if len(rows) else (np.zeros(1, np.int64), 0.0))
        return out

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Accumulate without communicating until the minibatch's last micro-batch (``enabled``)."""
        if self.mode == "ddp" and not enabled:
            with self.module.no_sync():  # type: ignore[union-attr]
                yield
            return
        if self.mode == "fsdp2":
            self.module.set_requires_gradient_sync(enabled)  # type: ignore[union-attr]
        yield

    def backward(self, loss: torch.Tensor, weight: float, outputs: Any = None) -> None:
        """Backward of ``loss`` times ``weight`` (its share of the minibatch); ``outputs``: evaluate's."""
        # DDP and fully_shard average gradients over the processes; times world_size, they sum.
        scaled = loss * (weight * self.world_size)
        if self.mode != "ddp" or outputs is None:
            scaled.backward()
            return
        # DDP waits for a gradient of every parameter its forward's outputs reach; an output the loss
        # leaves out (GRPO's values, the VLA's logits) gets a zero one, as the loss does not depend on it.
        extra = [t for t in _tensors(outputs) if t.requires_grad]
        torch.autograd.backward([scaled, *extra], [torch.ones_like(scaled), *map(torch.zeros_like, extra)])

    def sum_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """``sums`` added over the processes (every process has the same keys, in any order)."""
        if self.world_size == 1:
            return dict(sums)
        keys = sorted(sums)
        t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip the global gradient norm (over every process's shard with fsdp2); returns it."""
        params = [p for p in self.policy.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return float(_local(norm))

    # --- weights out and in ------------------------------------------------------------------------
    def trainable_tensors(self) -> dict[str, torch.Tensor] | None:
        """CPU copies of the trainable parameters (weight sync); None on ranks other than 0.

        fsdp2: a collective (every process calls it)."""
        out = {}
        for name, p in self.policy.named_parameters():
            if p.requires_grad:
                full = _local(p.detach())
                if self.is_main:
                    out[name] = full.to("cpu", copy=True)
        return out if self.is_main else None

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The policy's whole state dict on the CPU at rank 0 (None elsewhere). fsdp2: a collective."""
        if self.mode != "fsdp2":
            if not self.is_main:
                return None
            return {k: v.detach().to("cpu", copy=True) for k, v in self.policy.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(
            self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        return {k.removeprefix(_INNER): v for k, v in sd.items()} if self.is_main else None

    def load_full_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Every process loads the same full state dict (a resumed checkpoint). fsdp2: a collective."""
        if self.mode != "fsdp2":
            self.policy.load_state_dict(state_dict)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        full = {_INNER + k: v for k, v in state_dict.items()}
        set_model_state_dict(self.module, full, options=StateDictOptions(full_state_dict=True))

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict | None:
        """The optimizer's state to checkpoint (rank 0; None elsewhere). fsdp2: keyed by parameter
        name, gathered (a collective); otherwise torch's own layout (identical on every process)."""
        if self.mode != "fsdp2":
            return optimizer.state_dict() if self.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        sd = get_optimizer_state_dict(self.module, optimizer, options=options)
        return sd if self.is_main else None

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.mode != "fsdp2":
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        # strict=False: a parameter that never had a gradient (GRPO's value head) has no Adam state to load.
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_optimizer_state_dict(self.module, optimizer, state, options=options)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.mode != "none" and dist.is_initialized():
            dist.destroy_process_group()
