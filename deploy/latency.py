"""Where a command's latency goes: one timing record per published command, stage by stage.

The policy node writes a :class:`CommandTiming` for every action it publishes (the franka node adds
when it received and executed it); :func:`stage_durations` turns records into per-stage seconds for
``tests/benchmarks/bench_ros_latency.py``. All times are wall-clock seconds (``time.time()``), as are
the camera stamps. In a chunk, actions after the first share its frame and inference: their
``inference_end -> published`` is the time they waited in the queue, by design (action k is
planned for the frame's time + k periods). So the pipeline's latency is that of each chunk's first
executed action (``frame_to_first_command``; asynchronous inference skips the actions whose time
passed while the model ran), and ``planned_to_executed`` says how late any action ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

NAN = float("nan")


@dataclass(frozen=True)
class CommandTiming:
    captured: float  # the capture stamp of the oldest camera frame the action was computed from
    received: float  # when the policy node received that frame
    assembled: float  # when the observation was assembled (in a control tick)
    inference_start: float
    inference_end: float
    published: float  # when the action was published (its ``published`` field: the join key)
    planned: float = NAN  # the time it was planned for: frame stamp + k periods (action k of its chunk)
    franka_received: float = NAN  # when the franka node received it
    executed: float = NAN  # when franky had sent it to the arm (after the safety filter)

    def with_franka(self, received: float, executed: float) -> CommandTiming:
        return replace(self, franka_received=received, executed=executed)


#: (name, from field, to field), in the order a frame becomes a command.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("capture_to_received", "captured", "received"),  # render/driver + camera publish + DDS
    ("received_to_assembled", "received", "assembled"),  # waiting for the control tick
    ("assembled_to_inference_start", "assembled", "inference_start"),  # async: the worker's wake-up
    ("inference", "inference_start", "inference_end"),
    ("inference_end_to_published", "inference_end", "published"),  # later chunk actions: queued
    ("published_to_franka_received", "published", "franka_received"),  # DDS
    ("franka_received_to_executed", "franka_received", "executed"),  # spacing, safety filter, franky send
    ("frame_to_executed", "captured", "executed"),  # the whole path (later chunk actions: by design)
    ("planned_to_executed", "planned", "executed"),  # how late against its plan
)


def stage_durations(timings: list[CommandTiming]) -> dict[str, list[float]]:
    """Seconds spent in each stage, per command (commands without the stage's times are left out),
    and ``frame_to_first_command``: the whole path of the first executed action of each chunk."""
    out: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    first: dict[float, CommandTiming] = {}  # per frame (chunk): its earliest published command
    for t in timings:
        for name, a, b in STAGES:
            d = getattr(t, b) - getattr(t, a)
            if not math.isnan(d):
                out[name].append(d)
        if not math.isnan(t.executed) and (t.captured not in first or t.published < first[t.captured].published):
            first[t.captured] = t
    out["frame_to_first_command"] = [t.executed - t.captured for t in first.values()]
    return out
