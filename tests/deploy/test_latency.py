"""The latency record: stages add up to the whole path; the pipeline latency is each chunk's first action."""

from __future__ import annotations

import pytest

from simbridge.deploy.latency import STAGES, CommandTiming, stage_durations


def chunk(frame: float, published: list[float]) -> list[CommandTiming]:
    """A chunk planned from ``frame``: received 5 ms later, assembled at 30, inferred 31..41 ms."""
    base = CommandTiming(frame, frame + 0.005, frame + 0.030, frame + 0.031, frame + 0.041, 0.0)
    return [CommandTiming(base.captured, base.received, base.assembled, base.inference_start, base.inference_end,
                          p, planned=frame + 0.1 * k).with_franka(p + 0.002, p + 0.004)
            for k, p in enumerate(published)]  # fmt: skip


def test_stages_add_up_and_the_first_action_of_each_chunk_is_the_pipeline_latency():
    timings = chunk(10.0, [10.042, 10.142, 10.242]) + chunk(10.3, [10.345, 10.445])
    stages = stage_durations(timings)
    path = [name for name, _, _ in STAGES if name not in ("frame_to_executed", "planned_to_executed")]
    for i in range(len(timings)):
        assert sum(stages[name][i] for name in path) == pytest.approx(stages["frame_to_executed"][i])
    assert stages["frame_to_first_command"] == pytest.approx([0.046, 0.049])  # one per chunk
    assert stages["inference"] == pytest.approx([0.010] * 5)
    assert stages["planned_to_executed"] == pytest.approx([0.046, 0.046, 0.046, 0.049, 0.049])


def test_commands_the_franka_node_never_executed_count_only_up_to_publication():
    t = CommandTiming(1.0, 1.01, 1.02, 1.03, 1.04, 1.05)
    stages = stage_durations([t])
    assert stages["inference"] == pytest.approx([0.01]) and stages["frame_to_executed"] == []
    assert stages["frame_to_first_command"] == []
