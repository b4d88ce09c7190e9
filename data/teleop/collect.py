"""Teleop-assisted data collection over any contract environment (simulation, twin, robot).

Two modes, one loop (:class:`Collector`):

* ``teleop``: pure demonstrations. The operator's device drives every step.
* ``intervene``: a policy rolls out (HIL-SERL style); the operator takes over at any step,
  either by moving the device (``takeover="motion"``, hands back after
  ``handback_idle_steps`` idle reads) or with the ``intervene`` button (``takeover="button"``,
  a toggle). On take-over and hand-back the policy's queued action chunk is dropped, so it
  re-plans from the state the operator left.

Every step records the observation, the action actually executed (after the safety filter),
``policy_action`` (what the policy proposed at that step; NaN in pure teleop) and the
``intervention`` flag (True when the human produced the executed action). Fail closed: when
the device disconnects, the safety filter rejects an action or the environment raises (a
robot fault), the loop stops the robot
(``env.stop()`` where the environment has one, and no further step), and commits what was
recorded with the reason in ``EpisodeMeta.extra["aborted"]``.

The environment is anything with the gym-like contract API of ``simbridge.training.envs``:
``reset(seed=) -> (Observation, info)``, ``step(action) -> (Observation, reward, terminated,
truncated, info)`` with ``info["success"]``, plus ``contract``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from simbridge.data.spec import EpisodeMeta, Observation, Policy
from simbridge.data.store import EpisodeWriter
from simbridge.data.teleop.devices import DeviceDisconnected, DeviceState, TeleopDevice
from simbridge.data.teleop.mapping import ActionMapper

log = logging.getLogger(__name__)


@dataclass
class EpisodeResult:
    """What happened in one collected episode."""

    index: int | None  # index in the store; None when discarded
    steps: int
    success: bool | None
    interventions: int  # take-overs
    intervention_steps: int
    aborted: str = ""  # why it stopped early (device disconnected, safety rejection, quit)
    discarded: bool = False
    quit: bool = False
    events: list[str] = field(default_factory=list)


class Collector:
    """Runs episodes of ``env`` with ``device`` (and optionally ``policy``) into ``writer``."""

    def __init__(
        self,
        env,
        device: TeleopDevice,
        writer: EpisodeWriter,
        *,
        mode: Literal["teleop", "intervene"] = "teleop",
        policy: Policy | None = None,
        mapper: ActionMapper | None = None,
        safety=None,
        takeover: Literal["motion", "button"] = "motion",
        handback_idle_steps: int = 5,
        max_steps: int = 200,
        operator: str = "operator",
        task: str = "",
        split: str = "",
        policy_id: str = "",
        realtime_hz: float | None = None,
    ) -> None:
        if mode not in ("teleop", "intervene"):
            raise ValueError(f"mode: 'teleop' or 'intervene', got {mode!r}")
        if mode == "intervene" and policy is None:
            raise ValueError("mode 'intervene' needs a policy to intervene on")
        if takeover not in ("motion", "button"):
            raise ValueError(f"takeover: 'motion' or 'button', got {takeover!r}")
        self.env, self.device, self.writer = env, device, writer
        self.mode, self.policy, self.takeover = mode, policy, takeover
        self.mapper = mapper or ActionMapper(action_spec=env.contract.action)
        if safety is None:
            from simbridge.deploy.safety import SafetyFilter, SafetyLimits

            spec = env.contract.action
            safety = SafetyFilter(SafetyLimits(control_rate_hz=spec.control_rate_hz))
        self.safety = safety
        self.handback_idle_steps = handback_idle_steps
        self.max_steps, self.operator, self.task, self.split = max_steps, operator, task, split
        self.policy_id = policy_id or ("teleop" if mode == "teleop" else "policy")
        self.realtime_hz = realtime_hz

    # --- one episode --------------------------------------------------------------------------
    def run_episode(self, seed: int | None = None) -> EpisodeResult:
        obs, info = self.env.reset(seed=seed)
        if self.policy is not None:
            self.policy.reset()
        self.mapper.reset()
        queue: deque[np.ndarray] = deque()
        toggled = False  # the intervene button's latch
        intervening = self.mode == "teleop"
        idle = 0
        takeovers = 1 if intervening else 0
        operator_steps = 0
        success: bool | None = None
        labeled_by = ""
        aborted, discarded, quit_ = "", False, False
        events: list[str] = []
        steps = 0
        next_tick = time.monotonic()

        for t in range(self.max_steps):
            try:
                state = self.device.read()
            except DeviceDisconnected as exc:
                aborted = f"device disconnected at step {t}: {exc}"
                self._fail_closed()
                break
            pressed = state.buttons
            if "discard" in pressed:
                discarded = True
                break
            if "quit" in pressed:
                quit_, aborted = True, f"operator quit at step {t}"
                break
            if "success" in pressed or "failure" in pressed:
                success, labeled_by = "success" in pressed, f"operator:{self.operator}"
                break

            policy_action = None
            if self.mode == "intervene":
                if not queue:
                    try:
                        queue.extend(np.asarray(self.policy.predict(obs), np.float32).reshape(-1, 7))
                    except Exception as exc:  # a broken policy must not lose the episode either
                        aborted = f"policy error at step {t}: {type(exc).__name__}: {exc}"
                        self._fail_closed()
                        break
                policy_action = queue.popleft()
                was = intervening
                intervening, toggled, idle = self._takeover(state, was, toggled, idle)
                if intervening != was:
                    queue.clear()  # take-over / hand-back: the policy re-plans from here
                    events.append(f"{'take-over' if intervening else 'hand-back'} at step {t}")
                    takeovers += int(intervening)
                    if intervening:
                        # Start the operator from the gripper state the policy left.
                        self.mapper.gripper = float(np.clip(policy_action[6], -1.0, 1.0))
            raw = self.mapper(state) if intervening else policy_action
            result = self.safety.filter(raw, obs.ee_pose, obs.joint_positions)
            if result.rejected:
                who = "operator" if intervening else "policy"
                aborted = f"safety filter rejected the {who} action at step {t}: {result.reason}"
                self._fail_closed()
                break
            executed = np.asarray(result.action, np.float32)
            try:
                next_obs, _reward, terminated, truncated, info = self.env.step(executed)
            except Exception as exc:  # a robot fault, a lost connection: stop, keep what was recorded
                aborted = f"environment error at step {t}: {type(exc).__name__}: {exc}"
                self._fail_closed()
                break
            # Recorded once executed: (observation, the action executed from it, who produced it).
            self.writer.add_step(obs, executed, policy_action=policy_action, intervention=intervening)
            obs = next_obs
            steps += 1
            operator_steps += int(intervening)
            if "success" in info:
                success = bool(success) or bool(info["success"])
                labeled_by = "env"
            if terminated or truncated:
                break
            if self.realtime_hz:  # hold the control rate; after a slow step, do not rush to catch up
                next_tick = max(next_tick + 1.0 / self.realtime_hz, time.monotonic())
                time.sleep(max(0.0, next_tick - time.monotonic()))

        if discarded or steps == 0:
            self.writer.discard_episode()
            return EpisodeResult(
                None, steps, success, takeovers, operator_steps, aborted, True, quit_, events
            )
        meta = EpisodeMeta(
            instruction=getattr(self.env, "instruction", "") or obs.instruction,
            task=self.task,
            success=success,
            success_labeled_by=labeled_by if success is not None else "",
            policy_id=self.policy_id,
            num_interventions=takeovers,
            split=self.split,
            seed=seed,
            extra={
                "mode": self.mode,
                "device": self.device.name,
                "operator": self.operator,
                "intervention_steps": operator_steps,
                "aborted": aborted,
                "events": events,
            },
        )
        index = self.writer.end_episode(meta)
        return EpisodeResult(index, steps, success, takeovers, operator_steps, aborted, False, quit_, events)

    def _takeover(self, state: DeviceState, was: bool, toggled: bool, idle: int) -> tuple[bool, bool, int]:
        if "intervene" in state.buttons:
            toggled = not toggled
        if self.takeover == "button":
            return toggled, toggled, 0
        if toggled or self.mapper.is_active(state):
            return True, toggled, 0
        if was:
            idle += 1
            if idle < self.handback_idle_steps:
                return True, toggled, idle  # brief pauses keep the operator in control
        return False, toggled, 0

    def _fail_closed(self) -> None:
        """Stop the robot: environments that drive hardware expose ``stop()``; simulators just halt."""
        stop = getattr(self.env, "stop", None)
        if callable(stop):
            try:
                stop()
            except Exception as exc:  # keep the recorded steps even if the stop call fails too
                log.error("stopping the robot failed: %s", exc)

    # --- many episodes ------------------------------------------------------------------------
    def run(self, episodes: int, seed: int = 0, progress: bool = True) -> list[EpisodeResult]:
        """Collect up to ``episodes`` (stops early on quit or device disconnect)."""
        results: list[EpisodeResult] = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=episodes, desc=f"collect ({self.mode})", unit="episode")
        try:
            for k in range(episodes):
                res = self.run_episode(seed=seed + k)
                results.append(res)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(steps=res.steps, success=res.success, takeovers=res.interventions)
                if res.quit or res.aborted.startswith(("device disconnected", "environment error")):
                    break
        finally:
            if bar is not None:
                bar.close()
        return results


def observation_summary(obs: Observation) -> str:
    x, y, z = np.asarray(obs.ee_pose)[:3]
    return f"ee ({x:+.3f}, {y:+.3f}, {z:+.3f}) gripper {obs.gripper_width:.3f} m"
