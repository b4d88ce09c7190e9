"""ToyReach: a documented toy task and policy for testing the RL machinery in seconds.

Neither is a stand-in for the real ones in a run: they exist so that the algorithm core,
the worker groups, pipelining and fault handling can be exercised (and shown to learn)
without the simulator or a VLA. They speak exactly the interfaces of the real parts:

* :class:`ToyReachEnv` follows ``simbridge.training.envs``' env interface: ``reset(seed)``
  -> ``(Observation, info)``, ``step(action (7,))`` -> ``(obs, reward, terminated, truncated,
  info)`` with sparse success reward, ``info["success"]``, ``info["dense_reward"]`` and
  ``info["state"]``. The end effector starts at a seeded random point and must reach the
  origin (within 3 cm) with the contract's delta actions. ``step_cost_s`` burns CPU per step
  like a simulator would; ``crash_after_steps`` + ``crash_marker`` kill the hosting process
  once (used to test worker restarts).
* :class:`ToyPolicy` follows ``simbridge.training.models``' policy interface: ``prepare``,
  ``act`` (sampled bin tokens, summed log-probs, values), ``evaluate`` (log-probs, entropy,
  values of given tokens), ``save_pretrained`` / ``from_pretrained``; each of the 7 action
  dimensions is a categorical over ``bins`` uniform bins, like the VLA's action tokens.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from simbridge.data.spec import (
    ACTION_DIM,
    CameraSpec,
    Observation,
    ObservationSpec,
    PolicyContract,
)

TOY_CONTRACT = PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("scene", 8, 8),)), chunk_size=1)


class ToyReachEnv:
    """Move the end effector from a seeded random start to the origin (3-D point reaching)."""

    success_radius_m = 0.03
    start_box_m = 0.15

    def __init__(
        self,
        split: str = "train",
        seed: int = 0,
        max_episode_steps: int = 20,
        step_cost_s: float = 0.0,
        crash_after_steps: int = 0,
        crash_marker: str = "",
        **_: object,
    ) -> None:
        self.contract = TOY_CONTRACT
        self.instruction = "move the gripper to the target"
        self.split = split
        self.max_episode_steps = int(max_episode_steps)
        self.step_cost_s = float(step_cost_s)
        self.crash_after_steps = int(crash_after_steps)
        self.crash_marker = str(crash_marker)
        self._rng = np.random.default_rng(seed)
        self._pos = np.zeros(3)
        self._t = 0
        self._total_steps = 0
        self._image = np.zeros((8, 8, 3), np.uint8)

    def reset(self, seed: int | None = None) -> tuple[Observation, dict]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._pos = self._rng.uniform(-self.start_box_m, self.start_box_m, size=3)
        self._t = 0
        return self._obs(), {"instruction": self.instruction, "split": self.split, "seed": seed,
                             "state": self._state()}

    def step(self, action: np.ndarray, *, observe: bool = True) -> tuple[Observation, float, bool, bool, dict]:
        del observe  # rendering is free here; the observation is always returned
        action = self.contract.action.clip(np.asarray(action, np.float32).reshape(ACTION_DIM))
        self._burn_cpu()
        self._maybe_crash()
        before = float(np.linalg.norm(self._pos))
        self._pos = self._pos + action[:3]
        self._t += 1
        after = float(np.linalg.norm(self._pos))
        success = after < self.success_radius_m
        truncated = not success and self._t >= self.max_episode_steps
        info = {
            "success": success,
            "dense_reward": (before - after) / self.contract.action.max_translation_m,
            "state": self._state(),
        }
        return self._obs(), float(success), success, truncated, info

    def close(self) -> None:
        pass

    def _state(self) -> np.ndarray:
        return self._pos.astype(np.float32)

    def _obs(self) -> Observation:
        pose = np.array([*self._pos, 1.0, 0.0, 0.0, 0.0], np.float32)
        return Observation(
            images={"scene": self._image},
            ee_pose=pose,
            gripper_width=0.04,
            joint_positions=np.zeros(7, np.float32),
            instruction=self.instruction,
            timestamp=self._t * self.contract.action.period_s,
        )

    def _burn_cpu(self) -> None:
        # Real simulators spend CPU (physics + software rendering), not idle time: spin, don't sleep.
        if self.step_cost_s <= 0:
            return
        end = time.perf_counter() + self.step_cost_s
        x = 0.0
        while time.perf_counter() < end:
            x += sum(i * i for i in range(200))

    def _maybe_crash(self) -> None:
        self._total_steps += 1
        if self.crash_after_steps and self._total_steps >= self.crash_after_steps and self.crash_marker:
            marker = Path(self.crash_marker)
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(17)  # a hard crash, like a simulator segfault: no cleanup, no exception


@dataclass
class ToyActOutput:
    actions: torch.Tensor  # (B, 1, 7) physical actions
    tokens: torch.Tensor  # (B, 7) bin ids
    logprobs: torch.Tensor  # (B,)
    values: torch.Tensor  # (B,)


@dataclass
class ToyEvalOutput:
    logprobs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor


class ToyPolicy(nn.Module):
    """A small actor-critic MLP on the proprio vector with per-dimension categorical actions."""

    #: What ``simbridge.training.checkpoint.save_checkpoint`` records (family / preset).
    config = SimpleNamespace(family="toy", preset="mlp")

    def __init__(self, contract: PolicyContract = TOY_CONTRACT, hidden: int = 64, bins: int = 7, seed: int = 0):
        super().__init__()
        self.contract = contract
        self.hidden, self.bins = int(hidden), int(bins)
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(8, self.hidden), nn.Tanh(), nn.Linear(self.hidden, self.hidden), nn.Tanh())
        self.action_head = nn.Linear(self.hidden, ACTION_DIM * self.bins)
        self.value_head = nn.Linear(self.hidden, 1)
        nn.init.zeros_(self.action_head.weight)  # uniform over bins at the start: maximal exploration
        nn.init.zeros_(self.action_head.bias)
        spec = contract.action
        self.register_buffer("bin_values", torch.linspace(-1.0, 1.0, self.bins))
        self.register_buffer("action_scale", torch.as_tensor(spec.high, dtype=torch.float32))

    # --- the policy interface used by the RL workers --------------------------------------
    def prepare(self, observations: list[Observation]) -> dict[str, torch.Tensor]:
        proprio = np.stack([o.proprio() for o in observations]).astype(np.float32)
        proprio[:, :3] *= 10.0  # decimetres: inputs of order 1
        return {"proprio": torch.from_numpy(proprio)}

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(batch["proprio"])
        logits = self.action_head(h).view(-1, ACTION_DIM, self.bins)
        return logits, self.value_head(h).squeeze(-1)

    def act(self, batch: dict[str, torch.Tensor], deterministic: bool = False, temperature: float = 1.0) -> ToyActOutput:
        logits, values = self._forward(batch)
        dist = torch.distributions.Categorical(logits=logits / temperature)
        tokens = logits.argmax(-1) if deterministic else dist.sample()
        logprobs = dist.log_prob(tokens).sum(-1)  # of the distribution sampled from, as the VLA policies
        actions = (self.bin_values[tokens] * self.action_scale).unsqueeze(1)
        return ToyActOutput(actions=actions, tokens=tokens, logprobs=logprobs, values=values)

    def evaluate(self, batch: dict[str, torch.Tensor], tokens: torch.Tensor, temperature: float = 1.0) -> ToyEvalOutput:
        logits, values = self._forward(batch)
        dist = torch.distributions.Categorical(logits=logits / temperature)
        return ToyEvalOutput(logprobs=dist.log_prob(tokens).sum(-1), entropy=dist.entropy().sum(-1), values=values)

    # --- spec.Policy, for evaluation harnesses ----------------------------------------------
    def reset(self) -> None:
        pass

    @torch.no_grad()
    def predict(self, obs: Observation) -> np.ndarray:
        return self.act(self.prepare([obs]), deterministic=True).actions[0].numpy()

    # --- persistence ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), directory / "toy_policy.pt")
        (directory / "toy_policy.json").write_text(
            json.dumps({"hidden": self.hidden, "bins": self.bins, "contract": self.contract.to_dict()})
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ToyPolicy:
        directory = Path(directory)
        for name in ("toy_policy.json", "toy_policy.pt"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a toy policy checkpoint: {name} is missing")
        meta = json.loads((directory / "toy_policy.json").read_text())
        policy = cls(PolicyContract.from_dict(meta["contract"]), hidden=meta["hidden"], bins=meta["bins"])
        policy.load_state_dict(torch.load(directory / "toy_policy.pt", weights_only=True))
        return policy
