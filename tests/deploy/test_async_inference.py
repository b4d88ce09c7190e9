"""Inference off the control tick: the tick keeps its period whatever the model's speed."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from simbridge.data.spec import Observation
from simbridge.deploy.async_inference import AsyncChunkRunner

PERIOD = 0.05
CHUNK = 4


def observation() -> Observation:
    return Observation(images={"scene": np.zeros((8, 8, 3), np.uint8)}, ee_pose=np.array([0.5, 0, 0.3, 0, 1, 0, 0.0]),
                       gripper_width=0.08, joint_positions=np.zeros(7), instruction="x", timestamp=time.time())


class SlowPolicy:
    """Returns chunks whose action k holds k in dx; each predict takes ``seconds`` (or blocks on ``gate``)."""

    def __init__(self, seconds: float, gate: threading.Event | None = None, size: int = CHUNK) -> None:
        self.seconds, self.gate, self.calls, self.size = seconds, gate, 0, size

    def predict(self, obs: Observation) -> np.ndarray:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait()
        time.sleep(self.seconds)
        chunk = np.zeros((self.size, 7), np.float32)
        chunk[:, 0] = np.arange(self.size)
        return chunk


def run_ticks(runner: AsyncChunkRunner, n: int) -> tuple[list, list[float], list[float]]:
    """Tick at PERIOD like the policy node's timer; returns actions, tick durations and tick starts."""
    out, durations, starts = [], [], []
    next_t = time.monotonic()
    for _ in range(n):
        starts.append(time.monotonic())
        t0 = time.perf_counter()
        out.append(runner.tick(observation))
        durations.append(time.perf_counter() - t0)
        next_t += PERIOD
        time.sleep(max(0.0, next_t - time.monotonic()))
    return out, durations, starts


def test_a_model_three_periods_slow_never_blocks_the_tick() -> None:
    """The issue's case: inference at 3x the period, chunks of 4. Commands continue from the queued
    chunk, then pause while the model works (the franka watchdog stops the arm); no tick waits."""
    policy = SlowPolicy(3 * PERIOD)
    runner = AsyncChunkRunner(policy.predict, PERIOD, CHUNK, max_chunk_age_s=1.0)
    try:
        actions, durations, starts = run_ticks(runner, 40)
    finally:
        runner.close()
    assert max(durations) < PERIOD / 5, f"a tick took {max(durations) * 1000:.1f} ms"  # never waits on the model
    periods = np.diff(starts)
    assert abs(float(np.mean(periods)) - PERIOD) < PERIOD / 5
    sent = [a for a in actions if a is not None]
    assert len(sent) >= 8 and runner.stats.errors == 0
    steps = [a.step for a in sent]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), "each control step is executed once"


def test_latency_is_compensated_when_the_chunk_outlasts_the_inference() -> None:
    """Chunks of 8 and inference of 3 periods: actions flow without gaps after the first chunk, and
    the new chunk's actions for steps already executed are skipped, not replayed."""
    policy = SlowPolicy(3 * PERIOD, size=8)
    runner = AsyncChunkRunner(policy.predict, PERIOD, 8, request_below=6, max_chunk_age_s=1.0)
    try:
        actions, durations, _ = run_ticks(runner, 50)
    finally:
        runner.close()
    assert max(durations) < PERIOD / 5
    first = next(i for i, a in enumerate(actions) if a is not None)
    gaps = sum(a is None for a in actions[first:])
    assert gaps <= 2, [a is not None for a in actions]
    assert runner.stats.actions_skipped_late > 0
    assert [a.step for a in actions[first:] if a is not None] == list(range(len(actions) - first - gaps))


def test_a_hung_model_lets_the_queue_drain_then_sends_nothing_without_blocking() -> None:
    gate = threading.Event()
    policy = SlowPolicy(0.0, gate)
    gate.set()
    runner = AsyncChunkRunner(policy.predict, PERIOD, CHUNK, request_below=1, max_chunk_age_s=0.5)
    try:
        actions, _, _ = run_ticks(runner, 6)  # the first chunk arrives and drains
        gate.clear()  # the model hangs from the next request on
        later, durations, _ = run_ticks(runner, 20)
    finally:
        gate.set()
        runner.close()
    assert any(a is not None for a in actions)
    assert all(a is None for a in later[-10:]), "nothing is sent once the queue is empty"
    assert max(durations) < PERIOD / 5


def test_stale_chunks_and_old_episodes_are_dropped() -> None:
    runner = AsyncChunkRunner(SlowPolicy(0.3).predict, PERIOD, CHUNK, max_chunk_age_s=0.2)
    try:
        actions, _, _ = run_ticks(runner, 16)
    finally:
        runner.close()
    assert all(a is None for a in actions) and runner.stats.chunks_stale >= 1  # 0.3 s old on arrival: stale
    runner = AsyncChunkRunner(SlowPolicy(2 * PERIOD).predict, PERIOD, CHUNK)
    try:
        runner.tick(observation)  # request in flight
        runner.reset()  # a new episode before it returns
        time.sleep(4 * PERIOD)
        assert runner.tick(observation) is None and runner.stats.chunks_merged == 0
    finally:
        runner.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="aggregate"):
        AsyncChunkRunner(SlowPolicy(0).predict, PERIOD, CHUNK, aggregate="mean")
