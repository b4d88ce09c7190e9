"""Action-chunk execution: receding horizon and ACT-style temporal ensembling."""

from __future__ import annotations

import numpy as np
import pytest

from simbridge.data.config import ConfigError, load_config
from simbridge.data.spec import ContractError, Observation, PolicyContract
from simbridge.deploy.chunking import (
    ChunkingConfig,
    RecedingHorizon,
    TemporalEnsemble,
    from_config,
    make_chunk_executor,
)


class CountingPolicy:
    """Predicts chunk rows ``[call, step_in_chunk, 0, ...]`` so tests can see which prediction ran."""

    def __init__(self, k: int) -> None:
        self.contract = PolicyContract(chunk_size=k)
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def predict(self, obs: Observation) -> np.ndarray:
        k = self.contract.chunk_size
        chunk = np.zeros((k, 7), np.float32)
        chunk[:, 0] = self.calls
        chunk[:, 1] = np.arange(k)
        self.calls += 1
        return chunk


OBS = Observation(
    images={}, ee_pose=np.zeros(7), gripper_width=0.04, joint_positions=np.zeros(7), instruction="x"
)


def test_receding_horizon_runs_the_first_steps_then_predicts_again():
    policy = CountingPolicy(k=4)
    chunker = make_chunk_executor("receding", chunk_size=4, execute_steps=2)
    actions = [chunker.act(policy, OBS) for _ in range(6)]
    assert [a[0] for a in actions] == [0, 0, 1, 1, 2, 2]  # a new prediction every 2 steps
    assert [a[1] for a in actions] == [0, 1, 0, 1, 0, 1]
    assert policy.calls == 3 and chunker.num_predictions == 3
    whole = make_chunk_executor("receding", chunk_size=4)  # execute_steps=0: the whole chunk
    assert [whole.act(policy, OBS)[1] for _ in range(5)] == [0, 1, 2, 3, 0]


def test_temporal_ensemble_averages_overlapping_predictions_with_act_weights():
    decay = 0.5
    chunker = TemporalEnsemble(chunk_size=3, ensemble_decay=decay)
    chunks = [np.full((3, 7), v, np.float32) for v in (0.0, 3.0, 6.0, 9.0)]
    out = []
    for c in chunks:
        assert chunker.needs_prediction()
        chunker.push(c)
        assert not chunker.needs_prediction()
        out.append(chunker.next_action()[0])
    w = np.exp(-decay * np.arange(3))
    assert out[0] == pytest.approx(0.0)
    assert out[1] == pytest.approx((0 * w[0] + 3 * w[1]) / w[:2].sum())
    assert out[2] == pytest.approx((0 * w[0] + 3 * w[1] + 6 * w[2]) / w.sum())
    assert out[3] == pytest.approx((3 * w[0] + 6 * w[1] + 9 * w[2]) / w.sum())  # the first chunk expired


def test_ensemble_smooths_noisy_predictions_more_than_receding():
    rng = np.random.default_rng(0)
    truth = np.linspace(0, 1, 60)

    def noisy_chunk(t: int) -> np.ndarray:
        chunk = np.zeros((8, 7), np.float32)
        idx = np.minimum(np.arange(t, t + 8), 59)
        chunk[:, 0] = truth[idx] + rng.normal(0, 0.05, 8)
        return chunk

    errors = {}
    for mode in ("receding", "ensemble"):
        chunker = make_chunk_executor(mode, chunk_size=8, execute_steps=1, ensemble_decay=0.01)
        got = []
        for t in range(60):
            if chunker.needs_prediction():
                chunker.push(noisy_chunk(t))
            got.append(chunker.next_action()[0])
        errors[mode] = float(np.mean((np.array(got) - truth) ** 2))
    assert errors["ensemble"] < 0.5 * errors["receding"], errors


def test_reset_and_bad_chunks():
    chunker = RecedingHorizon(chunk_size=2)
    chunker.push(np.zeros((2, 7)))
    chunker.reset()
    assert chunker.needs_prediction() and chunker.step == 0
    with pytest.raises(RuntimeError, match="push"):
        chunker.next_action()
    with pytest.raises(ContractError, match="shape"):
        chunker.push(np.zeros((3, 7)))  # longer than the contract's chunk
    with pytest.raises(ContractError, match="non-finite"):
        chunker.push(np.full((2, 7), np.nan))
    with pytest.raises(ValueError, match="receding"):
        make_chunk_executor("sometimes", chunk_size=2)


def test_config_builds_the_executor():
    cfg = load_config(ChunkingConfig, overrides=["mode=ensemble", "ensemble_decay=0.1"])
    ex = from_config(cfg, chunk_size=4)
    assert isinstance(ex, TemporalEnsemble) and ex.decay == 0.1
    with pytest.raises(ConfigError, match="execute_steps"):
        load_config(ChunkingConfig, overrides=["execute_steps=-1"])
    with pytest.raises(ConfigError):
        load_config(ChunkingConfig, overrides=["mode=random"])
