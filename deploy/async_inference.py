"""Inference off the control tick: the next action chunk is computed while the current one executes.

A synchronous control loop (observe -> infer -> act inside one tick) delays every command by the
inference time and stalls the tick whenever the model is slower than a period. :class:`AsyncChunkRunner`
follows LeRobot's asynchronous inference: a worker thread runs the policy, the tick only

1. merges a finished chunk (if any). Like LeRobot's client, actions are indexed by control step:
   a chunk predicted from the observation taken at step ``s`` holds the actions for steps
   ``s, s+1, ...``; those for steps already executed meanwhile (from the previous chunk) are
   skipped, so the latency is compensated, not replayed. If the queue ran dry while the model
   worked, the arm stood still and nothing is skipped. A chunk whose observation is older than
   ``max_chunk_age_s`` is dropped as stale. Action k carries the planned time observation + k
   periods (the stamp the command is sent with);
2. asks for the next chunk when fewer than ``request_below`` actions remain queued and no
   request is in flight (the observation is snapshot now, in the tick);
3. pops the next queued action with its planned time, or returns None when the queue is empty
   (nothing is sent; the franka node's watchdog stops the arm if that lasts).

The tick never waits on the model. ``aggregate="replace"`` lets the newest chunk replace what is
queued (receding horizon on the freshest observation); ``"average"`` blends overlapping planned
steps (temporal-ensembling flavour, weight ``exp(-decay)`` on the older plan).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from simbridge.data.spec import Observation
from simbridge.deploy.chunking import check_chunk


@dataclass(frozen=True)
class PlannedAction:
    action: np.ndarray  # (7,) float32
    planned_time: float  # observation time + k periods (wall clock): the stamp the command carries
    chunk: int  # which prediction it came from
    step: int  # the control step it is for (counted in executed actions)
    observed: float  # the time of the observation it was planned from
    inference_start: float = float("nan")  # wall clock (the runner's clock) around the prediction
    inference_end: float = float("nan")


@dataclass
class AsyncStats:
    requests: int = 0
    chunks_merged: int = 0
    chunks_stale: int = 0
    actions_skipped_late: int = 0
    empty_ticks: int = 0
    inference_s: float = 0.0  # last inference time
    errors: int = 0
    last_error: str = ""


class AsyncChunkRunner:
    """Runs ``predict(obs) -> (k, 7) chunk`` in a worker thread, feeding one action per :meth:`tick`."""

    def __init__(self, predict: Callable[[Observation], np.ndarray], period_s: float, chunk_size: int,
                 request_below: int = 0, max_chunk_age_s: float = 0.5,
                 aggregate: Literal["replace", "average"] = "replace", decay: float = 0.01,
                 clock: Callable[[], float] = time.time) -> None:
        if not (period_s > 0 and chunk_size >= 1):
            raise ValueError(f"period_s > 0 and chunk_size >= 1 needed, got {period_s}, {chunk_size}")
        if aggregate not in ("replace", "average"):
            raise ValueError(f"aggregate: 'replace' or 'average', got {aggregate!r}")
        self.predict = predict
        self.period = float(period_s)
        self.chunk_size = int(chunk_size)
        # Default: ask for the next chunk when half of the current one is left.
        self.request_below = int(request_below) or max(1, math.ceil(chunk_size / 2))
        self.max_chunk_age_s = float(max_chunk_age_s)
        self.aggregate = aggregate
        self.decay = float(decay)
        self.clock = clock
        self.stats = AsyncStats()
        self._queue: deque[PlannedAction] = deque()
        self._lock = threading.Lock()
        self._request: tuple[int, int, Observation] | None = None  # (generation, step, observation)
        # (generation, step, obs time, chunk, inference start, inference end)
        self._result: tuple[int, int, float, np.ndarray, float, float] | None = None
        self._executed = 0  # actions handed out this episode: the current control step
        self._in_flight = False
        self._generation = 0  # bumped by reset(): results of an earlier episode are thrown away
        self._chunks = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="policy-inference", daemon=True)
        self._worker.start()

    # --- the control tick (never blocks on the model) -------------------------------------------------
    def tick(self, observe: Callable[[], Observation | None]) -> PlannedAction | None:
        now = self.clock()
        self._merge(now)
        with self._lock:
            want = not self._in_flight and len(self._queue) < self.request_below
        if want:
            obs = observe()
            if obs is not None:
                with self._lock:
                    self._request, self._in_flight = (self._generation, self._executed, obs), True
                    self.stats.requests += 1
                self._wake.set()
        while self._queue:
            planned = self._queue.popleft()
            if planned.planned_time >= now - self.max_chunk_age_s:
                self._executed += 1
                return planned
            self.stats.actions_skipped_late += 1  # the queue outlived its observation: drop, never replay
        self.stats.empty_ticks += 1
        return None

    def _merge(self, now: float) -> None:
        with self._lock:
            result, self._result = self._result, None
        if result is None:
            return
        generation, step, obs_time, chunk, started, ended = result
        if generation != self._generation:
            return
        if now - obs_time > self.max_chunk_age_s:
            self.stats.chunks_stale += 1
            return
        self._chunks += 1
        new = [PlannedAction(a, obs_time + k * self.period, self._chunks, step + k, obs_time, started, ended)
               for k, a in enumerate(chunk)]
        done = [p for p in new if p.step < self._executed]  # executed from the previous chunk meanwhile
        self.stats.actions_skipped_late += len(done)
        new = new[len(done):]
        if self.aggregate == "average" and self._queue:
            old = {p.step: p for p in self._queue}
            w = math.exp(-self.decay)
            blended = []
            for p in new:
                prev = old.get(p.step)
                action = p.action if prev is None else ((w * prev.action + p.action) / (1 + w)).astype(np.float32)
                blended.append(PlannedAction(action, p.planned_time, p.chunk, p.step, p.observed, p.inference_start,
                                             p.inference_end))
            new = blended
        self._queue = deque(new)
        self.stats.chunks_merged += 1

    # --- the worker -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            with self._lock:
                request, self._request = self._request, None
            if request is None:
                continue
            generation, step, obs = request
            t0, started = time.perf_counter(), self.clock()
            try:
                chunk = check_chunk(self.predict(obs), self.chunk_size)
            except Exception as err:  # the tick goes on without actions: the watchdog stops the arm
                self.stats.errors += 1
                self.stats.last_error = f"{type(err).__name__}: {err}"
                chunk = None
            self.stats.inference_s = time.perf_counter() - t0
            ended = self.clock()
            with self._lock:
                if chunk is not None:
                    self._result = (generation, step, float(obs.timestamp), chunk, started, ended)
                self._in_flight = False

    def reset(self) -> None:
        """A new episode: forget queued actions and any chunk still being computed."""
        with self._lock:
            self._generation += 1
            self._executed = 0
            self._queue.clear()
            self._result = self._request = None
            self._in_flight = False  # an inference still running returns into the old generation

    @property
    def queued(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=5.0)
