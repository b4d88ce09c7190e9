"""Model-based test of the writer: random sequences of steps, commits, discards, reopenings and
crashes (any chunk size, with and without in-episode commits) leave exactly the committed
episodes, in order, with their steps intact, and the interrupted ones as incomplete episodes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simbridge.data.spec import CameraSpec, EpisodeMeta, Observation
from simbridge.data.store import EpisodeStore, EpisodeWriter, validate_store

CAMS = (CameraSpec("c", 4, 6),)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("steps"), st.integers(1, 12)),
        st.tuples(st.just("end")),
        st.tuples(st.just("discard")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("crash")),
    ),
    min_size=1,
    max_size=10,
)


def obs_for(k: int) -> Observation:
    return Observation({"c": np.full((4, 6, 3), k % 256, np.uint8)}, np.full(7, k, np.float32), 0.0, np.zeros(7),
                       "model", float(k))  # fmt: skip


@settings(max_examples=8, deadline=None)
@given(ops=ops, chunk_steps=st.sampled_from([1, 3, 8]), commit_every=st.sampled_from([0, 1, 2]))
def test_random_operation_sequences_match_the_model(ops, chunk_steps, commit_every):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.zarr"
        committed: list[list[int]] = []
        incomplete: list[list[int]] = []
        pending: list[int] = []
        counter = 0

        def writer() -> EpisodeWriter:
            return EpisodeWriter(path, CAMS, chunk_steps=chunk_steps, software_version="t",
                                 commit_every_chunks=commit_every, fsync=False)  # fmt: skip

        w = writer()
        try:
            for op in ops:
                if op[0] == "steps":
                    for _ in range(op[1]):
                        w.add_step(obs_for(counter), np.full(7, counter, np.float32))
                        pending.append(counter)
                        counter += 1
                elif op[0] == "end" and pending:
                    assert w.end_episode(EpisodeMeta(instruction="model", seed=len(committed))) == len(
                        committed
                    )
                    committed.append(pending)
                    pending = []
                elif op[0] == "discard":
                    w.discard_episode()
                    pending = []
                elif op[0] == "reopen":
                    w.close()  # keeps the open episode as incomplete, unless in-episode commits are off
                    if pending and commit_every:
                        incomplete.append(pending)
                    pending = []
                    w = writer()
                elif op[0] == "crash":  # like kill -9: no close, the lock dies with the process
                    kept = pending[: w.committed_open_steps]
                    assert w.committed_open_steps <= len(pending)
                    assert commit_every or not kept
                    os.close(w._lock_fd)
                    w._closed = True
                    if kept:
                        incomplete.append(kept)
                    pending = []
                    w = writer()
                assert len(EpisodeStore(path)) == len(committed)  # readers never see the open episode
        finally:
            w.close()
        if pending and commit_every:
            incomplete.append(pending)
        store = EpisodeStore(path)
        assert len(store) == len(committed) and store.num_steps == sum(map(len, committed))
        for i, values in enumerate(committed):
            ep = store.episode(i)
            assert ep["action"][:, 0].tolist() == values
            assert ep["image_c"][:, 0, 0, 0].tolist() == [v % 256 for v in values]
            assert ep["timestamp"].tolist() == values and store.meta(i).seed == i
        full = EpisodeStore(path, include_incomplete=True)
        assert len(full) == len(committed) + len(incomplete) and full.num_incomplete == len(incomplete)
        for i, values in enumerate(incomplete, start=len(committed)):
            assert full.episode(i)["action"][:, 0].tolist() == values and full.meta(i).incomplete
        assert validate_store(path).ok
