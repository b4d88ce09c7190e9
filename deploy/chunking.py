"""Executing action chunks: receding horizon or temporal ensembling (ACT), one action per control step.

Chunking policies (OpenVLA-OFT, ACT, diffusion policy) predict ``K`` future actions per call. How
they are executed matters on a robot:

* ``receding`` — predict, execute the first ``execute_steps`` actions (all ``K`` by default), then
  predict again. Cheap: one inference every ``execute_steps`` steps.
* ``ensemble`` — temporal ensembling (ACT, Zhao et al. 2023): predict **every** step and execute
  the weighted mean of all predictions made for the current step, weights ``exp(-decay * i)``
  with ``i = 0`` the oldest prediction (older predictions weigh more; a larger decay trusts new
  observations more). Smoother, ``K`` times more inference.

The policy node and the evaluation share one loop::

    chunker = make_chunk_executor("receding", chunk_size=policy.contract.chunk_size)
    chunker.reset()                              # per episode
    action = chunker.act(policy, obs)            # (7,) float32: predicts only when needed

or, when inference runs elsewhere: ``if chunker.needs_prediction(): chunker.push(chunk)`` then
``chunker.next_action()``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Literal

import numpy as np

from simbridge.data.config import config
from simbridge.data.spec import ACTION_DIM, ContractError, Observation, Policy


@config
class ChunkingConfig:
    """How action chunks are executed (see the module docstring)."""

    mode: Literal["receding", "ensemble"] = "receding"
    #: receding: actions executed per prediction (0 = the whole chunk).
    execute_steps: int = 0
    #: ensemble: weight exp(-decay * i) of the i-th oldest prediction for a step.
    ensemble_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.execute_steps < 0:
            raise ValueError(f"execute_steps: 0 (whole chunk) or a positive count, got {self.execute_steps}")
        if not (math.isfinite(self.ensemble_decay) and self.ensemble_decay >= 0):
            raise ValueError(f"ensemble_decay: a non-negative number, got {self.ensemble_decay}")


def check_chunk(chunk: np.ndarray, chunk_size: int) -> np.ndarray:
    """A policy's chunk as ``(k<=chunk_size, 7)`` finite float32, or ContractError naming what is wrong."""
    arr = np.asarray(chunk, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != ACTION_DIM or not (1 <= arr.shape[0] <= chunk_size):
        raise ContractError(
            f"action chunk must have shape (k<={chunk_size}, {ACTION_DIM}), got {np.shape(chunk)}"
        )
    if not np.all(np.isfinite(arr)):
        raise ContractError("action chunk has non-finite values: the policy output is broken")
    return arr


class ChunkExecutor(ABC):
    """Turns chunks of ``chunk_size`` actions into one action per control step."""

    def __init__(self, chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.step = 0
        self.num_predictions = 0

    def reset(self) -> None:
        """Forget queued actions (call at the start of every episode)."""
        self.step = 0
        self.num_predictions = 0

    @abstractmethod
    def needs_prediction(self) -> bool:
        """True when the policy must be queried before :meth:`next_action`."""

    @abstractmethod
    def push(self, chunk: np.ndarray) -> None:
        """Add a chunk ``(k, 7)`` predicted from the current observation."""

    @abstractmethod
    def next_action(self) -> np.ndarray:
        """The ``(7,)`` float32 action for the current step; advances one step."""

    def act(self, policy: Policy, obs: Observation) -> np.ndarray:
        """Predict if needed, then return this step's action."""
        if self.needs_prediction():
            self.push(policy.predict(obs))
        return self.next_action()


class RecedingHorizon(ChunkExecutor):
    """Execute the first ``execute_steps`` actions of each chunk, then predict again."""

    def __init__(self, chunk_size: int, execute_steps: int = 0) -> None:
        super().__init__(chunk_size)
        if execute_steps < 0 or execute_steps > chunk_size:
            raise ValueError(
                f"execute_steps must be in [0, {chunk_size}] (0 = whole chunk), got {execute_steps}"
            )
        self.execute_steps = execute_steps or chunk_size
        self._queue: deque[np.ndarray] = deque()

    def reset(self) -> None:
        super().reset()
        self._queue.clear()

    def needs_prediction(self) -> bool:
        return not self._queue

    def push(self, chunk: np.ndarray) -> None:
        arr = check_chunk(chunk, self.chunk_size)
        self._queue = deque(arr[: self.execute_steps])
        self.num_predictions += 1

    def next_action(self) -> np.ndarray:
        if not self._queue:
            raise RuntimeError("no queued action: push() a chunk when needs_prediction() is True")
        self.step += 1
        return self._queue.popleft().copy()


class TemporalEnsemble(ChunkExecutor):
    """ACT's temporal ensembling: average every prediction made for the current step."""

    def __init__(self, chunk_size: int, ensemble_decay: float = 0.01) -> None:
        super().__init__(chunk_size)
        if not (math.isfinite(ensemble_decay) and ensemble_decay >= 0):
            raise ValueError(f"ensemble_decay must be >= 0, got {ensemble_decay}")
        self.decay = float(ensemble_decay)
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (step the chunk starts at, chunk)
        self._pushed_this_step = False

    def reset(self) -> None:
        super().reset()
        self._chunks.clear()
        self._pushed_this_step = False

    def needs_prediction(self) -> bool:
        return not self._pushed_this_step

    def push(self, chunk: np.ndarray) -> None:
        self._chunks.append((self.step, check_chunk(chunk, self.chunk_size)))
        self._pushed_this_step = True
        self.num_predictions += 1

    def next_action(self) -> np.ndarray:
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= self.step:
            self._chunks.popleft()  # chunks that no longer cover this step
        preds = [c[self.step - start] for start, c in self._chunks]  # oldest first
        if not preds:
            raise RuntimeError(
                "no prediction covers this step: push() a chunk when needs_prediction() is True"
            )
        weights = np.exp(-self.decay * np.arange(len(preds)))
        action = (np.asarray(preds, np.float64) * weights[:, None]).sum(0) / weights.sum()
        self.step += 1
        self._pushed_this_step = False
        return action.astype(np.float32)


#: Registry: mode name -> factory(chunk_size, execute_steps, ensemble_decay). Add variants here.
CHUNK_EXECUTORS: dict[str, Callable[[int, int, float], ChunkExecutor]] = {
    "receding": lambda k, steps, decay: RecedingHorizon(k, execute_steps=min(steps, k)),
    "ensemble": lambda k, steps, decay: TemporalEnsemble(k, ensemble_decay=decay),
}


def make_chunk_executor(
    mode: str = "receding", chunk_size: int = 1, execute_steps: int = 0, ensemble_decay: float = 0.01
) -> ChunkExecutor:
    """Build the executor for ``mode`` (a key of :data:`CHUNK_EXECUTORS`)."""
    if mode not in CHUNK_EXECUTORS:
        raise ValueError(f"unknown chunk execution mode {mode!r}; choose one of {sorted(CHUNK_EXECUTORS)}")
    return CHUNK_EXECUTORS[mode](int(chunk_size), int(execute_steps), float(ensemble_decay))


def from_config(cfg: ChunkingConfig, chunk_size: int) -> ChunkExecutor:
    return make_chunk_executor(cfg.mode, chunk_size, cfg.execute_steps, cfg.ensemble_decay)
