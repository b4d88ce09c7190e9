"""Failure analysis of ``simbridge eval``: the classifier on synthetic trajectories, scripted
policies in the real ManiSkill PutOnTarget env (state mode, short episodes), and the reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simbridge.data.report import to_markdown, write_report
from simbridge.data.spec import PolicyContract
from simbridge.training.envs import SimEnvSpec, make_env
from simbridge.training.eval_report import format_table, plot_summary, summarize
from simbridge.training.evaluation import evaluate, load_policy_source, run_episode
from simbridge.training.failure_analysis import (
    FAILURE_CLASSES,
    FailureThresholds,
    FailureTracker,
    StepRecord,
    classify_failure,
)

OBJ = np.array([0.0, 0.0, 0.02])
GOAL = np.array([-0.1, 0.1, 0.028])
OPEN, CLOSED = 1.0, -1.0


def step(tcp, cmd: float = OPEN, grasped: bool = False, obj=OBJ) -> StepRecord:
    return StepRecord(tcp=np.asarray(tcp, float), obj=np.asarray(obj, float), goal=GOAL, gripper_cmd=cmd,
                      gripper_width=0.08 if cmd > 0 else 0.0, is_grasped=grasped)  # fmt: skip


def approach(to, n: int = 5, start=(0.0, 0.0, 0.2)) -> list[StepRecord]:
    """Open-gripper steps moving the TCP in a straight line from ``start`` to ``to``."""
    return [step(np.asarray(start) + (np.asarray(to) - start) * (i + 1) / n) for i in range(n)]


def carry(n: int, to=(-0.1, 0.1, 0.12)) -> list[StepRecord]:
    """Grasped, closed-gripper steps carrying the object (3 cm below the TCP's start) towards ``to``."""
    out = []
    for i in range(n):
        tcp = OBJ + (np.asarray(to) - OBJ) * (i + 1) / n
        out.append(step(tcp, CLOSED, True, obj=tcp - [0, 0, 0.003]))
    return out


def failure(steps: list[StepRecord], success: bool = False, **thresholds: float) -> str | None:
    report = classify_failure(steps, success, FailureThresholds(**thresholds))
    return None if report is None else report.failure


# --- the classifier on synthetic trajectories --------------------------------------------------


def test_never_reached_wins_over_a_close_far_away():
    far = approach((-0.09, 0.0, 0.05))  # stops 9 cm short (and 3 cm up), then closes
    steps = far + [step(far[-1].tcp, CLOSED)] * 3
    assert failure(steps) == "never_reached"
    # The threshold is what decides: with a 10 cm reach the same close is off target.
    assert failure(steps, reach_m=0.10) == "closed_off_target"


def test_closed_off_target():
    steps = approach((0.04, 0.0, 0.02))  # reached (4 cm) but 4 cm to the side
    steps += [step(steps[-1].tcp, CLOSED)] * 3
    report = classify_failure(steps, success=False)
    assert report.failure == "closed_off_target"
    assert report.detail["close_xy_m"] == pytest.approx(0.04) and report.detail["close_attempts"] == 1


def test_closed_too_high():
    steps = approach((0.005, 0.0, 0.055))  # xy right, TCP 3.5 cm above the object's centre
    steps += [step(steps[-1].tcp, CLOSED)] * 3
    assert failure(steps) == "closed_too_high"
    assert failure(steps, grasp_height_m=0.05) == "timed_out"  # a close in place that did not hold


def test_the_close_attempt_nearest_the_object_is_judged():
    off = approach((0.04, 0.0, 0.02))
    high = approach((0.0, 0.0, 0.055), start=off[-1].tcp)
    steps = off + [step(off[-1].tcp, CLOSED)] * 2 + high + [step(high[-1].tcp, CLOSED)] * 2
    report = classify_failure(steps, success=False)
    assert report.failure == "closed_too_high" and report.detail["close_attempts"] == 2


def test_dropped_in_transit():
    steps = approach((0.0, 0.0, 0.017)) + [step((0.0, 0.0, 0.017), CLOSED)] * 3 + carry(6)
    lost_at = len(steps)
    steps += [step((-0.05, 0.05, 0.1), CLOSED, False, obj=(-0.05, 0.05, 0.02))] * 4  # slipped, gripper closed
    report = classify_failure(steps, success=False)
    assert report.failure == "dropped_in_transit" and report.detail["lost_at_step"] == lost_at


def test_released_off_target():
    held = approach((0.0, 0.0, 0.017)) + [step((0.0, 0.0, 0.017), CLOSED)] * 3 + carry(6, to=(0.1, 0.0, 0.1))
    tcp = held[-1].tcp
    # Opened two steps before the contact test let go: a release, not a slip.
    steps = held + [step(tcp, OPEN, True, obj=held[-1].obj)] * 2 + [step(tcp, OPEN, False, obj=(0.1, 0.0, 0.02))] * 3
    assert failure(steps) == "released_off_target"
    # An open command more than release_window_steps before the loss does not make it a release.
    flicker = [step(tcp, OPEN, True, obj=held[-1].obj)] + [step(tcp, CLOSED, True, obj=held[-1].obj)] * 4
    slip = held + flicker + [step(tcp, CLOSED, False, obj=(0.1, 0.0, 0.02))] * 3
    assert failure(slip) == "dropped_in_transit"
    assert failure(slip, release_window_steps=5) == "released_off_target"


def test_timed_out_hovering_or_still_holding():
    hover = approach((0.0, 0.0, 0.04)) + [step((0.0, 0.0, 0.04))] * 5  # reached, never closed
    assert failure(hover) == "timed_out"
    holding = approach((0.0, 0.0, 0.017)) + [step((0.0, 0.0, 0.017), CLOSED)] * 3 + carry(6)
    report = classify_failure(holding, success=False)
    assert report.failure == "timed_out" and report.detail["grasped_steps"] == 6


def test_success_has_no_failure_and_the_tracker_feeds_the_classifier():
    tracker = FailureTracker()
    for s in approach((-0.09, 0.0, 0.05)):
        tracker.add(s)
    assert tracker.classify(success=True) is None
    assert tracker.classify(success=False).failure == "never_reached"
    tracker.reset()
    assert tracker.steps == [] and tracker.classify(success=False).failure == "timed_out"


# --- summary, table, plot and report -------------------------------------------------------------


def _records() -> list[dict]:
    rows = []
    for split, cat, outcomes in [("train", "train", [None, "never_reached", "closed_too_high"]),
                                 ("vision_noise", "vision", ["never_reached", None, "dropped_in_transit"])]:  # fmt: skip
        for i, f in enumerate(outcomes):
            rows.append({"policy": "p", "split": split, "category": cat, "seed": i, "episode": i, "success": f is None,
                         "grasped": f == "dropped_in_transit", "steps": 10, "failure": f})  # fmt: skip
    return rows


def test_summary_table_and_plot_break_failures_down(tmp_path):
    summary = summarize(_records(), "p", {"task": "PutOnTarget-v1", "episodes_per_split": 3})
    assert list(summary["splits"]["train"]["failures"]) == list(FAILURE_CLASSES)
    assert summary["splits"]["train"]["failures"]["closed_too_high"] == 1
    assert summary["overall"]["failures"]["never_reached"] == 2
    assert sum(summary["overall"]["failures"].values()) == 6 - summary["overall"]["successes"]
    table = format_table(summary)
    header = next(line for line in table.splitlines() if line.startswith("failed episodes"))
    assert header.split()[4:] == ["never_reached", "closed_too_high", "dropped_in_transit"]
    assert next(line for line in table.splitlines()[4:] if line.startswith("vision_noise")).split()[1:] == ["1", "0", "1"]
    assert plot_summary(summary, tmp_path / "s.png").stat().st_size > 5000
    old = [{k: v for k, v in r.items() if k != "failure"} for r in _records()]  # runs before failure analysis
    assert summarize(old, "p", {})["overall"]["failures"]["unclassified"] == 4


def test_report_counts_failures_of_eval_runs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records()))
    report = write_report([f"sft={run}"], tmp_path / "report")
    overall = next(r for r in report.rows if r.category == "overall")
    assert overall.failures == {"sft": {"never_reached": 2, "closed_too_high": 1, "dropped_in_transit": 1}}
    md = to_markdown(report)
    assert "## Failed episodes by class" in md and "| vision | vision_noise | sft | 1 | 0 | 1 |" in md
    assert json.loads((tmp_path / "report" / "report.json").read_text())["rows"][0]["failures"]


# --- scripted policies in the real environment -------------------------------------------------


class GoTo:
    """Drives the TCP to the target object + ``offset`` (privileged state) and closes the gripper
    once there (``close``); ``lift_after`` closed steps later it lifts 8 cm and opens."""

    contract = PolicyContract(chunk_size=1)

    def __init__(self, env, offset, close: bool = True, lift_after: int = 0):
        self.env, self.offset, self.close, self.lift_after = env, np.asarray(offset), close, lift_after

    def reset(self) -> None:
        self.closed_steps, self.target = 0, None

    def predict(self, obs) -> np.ndarray:
        ms = self.env.unwrapped_ms
        tcp = ms.agent.tcp_pose.p[0].cpu().numpy()
        if self.target is None or self.closed_steps == 0:
            self.target = ms.target_info()["obj_pose"][0, :3].cpu().numpy() + self.offset
        gripper = OPEN
        if self.close and (self.closed_steps or np.linalg.norm(self.target - tcp) < 0.01):
            self.closed_steps += 1
            gripper = CLOSED
        target = self.target
        if self.lift_after and self.closed_steps > self.lift_after:
            target = self.target + np.array([0.0, 0.0, 0.08])
            gripper = OPEN if np.linalg.norm(target - tcp) < 0.01 else CLOSED
        d = 0.7 * (target - tcp)
        d *= min(1.0, 0.04 / max(float(np.linalg.norm(d)), 1e-9))
        return np.array([[*d, 0.0, 0.0, 0.0, gripper]], np.float32)


@pytest.fixture(scope="module")
def env():
    e = make_env(SimEnvSpec("PutOnTarget-v1", split="train", obs_mode="state", camera_size=(32, 32)), seed=0)
    yield e
    e.close()


@pytest.mark.parametrize(
    ("offset", "lift_after", "expected"),
    [
        ((-0.09, 0.0, 0.03), 0, "never_reached"),  # stops 9 cm short of the object and closes there
        ((0.0, 0.0, 0.045), 0, "closed_too_high"),  # right above it, TCP 4.5 cm over its centre
        ((0.0, 0.0, -0.003), 4, "released_off_target"),  # grasps, lifts, lets go in mid-air
    ],
)
def test_scripted_failures_are_classified_in_simulation(env, tmp_path, offset, lift_after, expected):
    env.max_episode_steps = 25
    try:
        summary = evaluate(lambda e: GoTo(e, offset, lift_after=lift_after), splits=["train"], episodes=1,
                           seed=1, env=env, run_dir=tmp_path, progress=False, policy_name=expected)  # fmt: skip
    finally:
        env.max_episode_steps = 80
    row = json.loads((tmp_path / "episodes.jsonl").read_text())
    assert row["success"] is False and row["failure"] == expected, row["failure_detail"]
    assert row["grasped"] is (expected == "released_off_target")
    assert summary["splits"]["train"]["failures"][expected] == 1
    assert expected in format_table(summary)


def test_the_expert_succeeds_without_a_failure(env, tmp_path):
    summary = evaluate(load_policy_source("expert"), splits=["train"], episodes=1, seed=2, env=env,
                       run_dir=tmp_path, progress=False)  # fmt: skip
    row = json.loads((tmp_path / "episodes.jsonl").read_text())
    assert row["success"] is True and row["failure"] is None and row["failure_detail"] is None
    assert not any(summary["overall"]["failures"].values())
    assert "failed episodes" not in format_table(summary)


class OtherTaskEnv:
    """A minimal non-ManiSkill contract env (like the LIBERO suites): no privileged PutOnTarget state."""

    contract = PolicyContract(chunk_size=1)

    def reset(self, seed: int = 0):
        self.t = 0
        return None, {"instruction": "open the drawer"}

    def step(self, action, observe: bool = True):
        self.t += 1
        return None, 0.0, False, self.t >= 3, {"success": False, "instruction": "open the drawer"}


def test_failures_outside_put_on_target_are_unclassified():
    class Still:
        def reset(self) -> None:
            pass

        def predict(self, obs) -> np.ndarray:
            return np.zeros((1, 7), np.float32)

    result = run_episode(OtherTaskEnv(), Still(), seed=0)
    assert result["failure"] == "unclassified" and result["failure_detail"] is None
