"""Expert demonstrations written as episodes of the zarr episode store.

    from simbridge.training.envs.demos import write_expert_demos
    stats = write_expert_demos("runs/demos/train.zarr", episodes=75, spec=SimEnvSpec(split="train"), seed=0)

Each episode is rolled out with the scripted expert (:mod:`.expert`) and committed with its
:class:`~simbridge.data.spec.EpisodeMeta` (instruction, split, seed, success labelled by the
simulator). Failed rollouts are dropped unless ``keep_failures=True`` (then labelled
``success=False``), so SFT never learns from a failure by accident.

Two kinds of noise (both off by default):

* ``expert_noise_std``: the expert's own actions are noisy; ``action`` = ``policy_action`` = the
  noisy action. More diverse demos, but SFT also learns the noise.
* ``execution_noise_std`` (DART, Laskey et al. 2017): the expert's clean action is recorded as
  ``policy_action`` and a noisy copy of it is executed (``action``). The expert corrects the
  drift on the next steps, so the demos visit the off-course states a learnt policy reaches and
  label them with the correction. Train on the clean labels with ``data.action_label=policy_action``.

``expert_style`` picks the expert's labels (:mod:`.expert`: ``funnel``, the default, or ``gated``,
which the stores before the funnel were recorded with); it is kept in each episode's
``meta.extra["expert_style"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from simbridge.data.spec import EpisodeMeta
from simbridge.data.store import EpisodeWriter
from simbridge.training.envs.spec import SimEnvSpec


def write_expert_demos(
    store_path: str | Path,
    episodes: int,
    *,
    spec: SimEnvSpec | None = None,
    seed: int = 0,
    env: Any = None,
    keep_failures: bool = False,
    expert_noise_std: float = 0.0,
    execution_noise_std: float = 0.0,
    expert_style: str = "funnel",
    progress: bool = True,
    **spec_fields: Any,
) -> dict:
    """Roll out the expert on seeds ``seed, seed+1, ...`` until ``episodes`` are written.

    The episodes are recorded in ``spec`` (keywords named like its fields, e.g. ``split=``,
    override it), in ``env`` when one is given (then only the spec's split is used).
    With ``keep_failures=False`` failed seeds are skipped (and counted); at most ``2 * episodes``
    seeds are tried. Returns ``{"written", "attempted", "successes", "store", "seeds"}``.
    """
    import numpy as np

    from simbridge.training.envs import make_env, make_expert
    from simbridge.training.envs.expert import STYLES

    spec = SimEnvSpec.of(spec, **spec_fields)
    if expert_noise_std < 0 or execution_noise_std < 0:
        raise ValueError("expert_noise_std / execution_noise_std: a standard deviation >= 0 (m / rad)")
    if expert_style not in STYLES:
        raise ValueError(f"expert_style: one of {', '.join(STYLES)}, got {expert_style!r}")
    own_env = env is None
    if own_env:
        env = make_env(spec, seed=seed)
    expert = make_expert(env, noise_std=expert_noise_std, seed=seed, style=expert_style)
    execution_rng = np.random.default_rng([seed, 1])
    action_spec = env.contract.action
    written, attempted, successes, seeds = 0, 0, 0, []
    try:
        with (
            EpisodeWriter(
                store_path, env.contract.observation.cameras, robot=f"maniskill:{env.task}"
            ) as writer,
            tqdm(total=episodes, desc=f"expert demos [{env.split.name}]", disable=not progress) as bar,
        ):
            ep_seed = seed
            while written < episodes and attempted < 2 * episodes:
                obs, info = env.reset(seed=ep_seed, options={"split": spec.split})
                expert.reset()
                attempted += 1
                done = False
                while not done:
                    label = expert.predict(obs)[0]
                    action = label
                    if execution_noise_std > 0:  # the gripper command stays clean
                        noise = np.zeros(7, np.float32)
                        noise[:6] = execution_rng.normal(0.0, execution_noise_std, 6)
                        action = action_spec.clip(label + noise)
                    writer.add_step(obs, action, policy_action=label)
                    obs, _, terminated, truncated, info = env.step(action)
                    done = terminated or truncated
                success = bool(info["success"])
                successes += success
                if success or keep_failures:
                    meta = EpisodeMeta(
                        instruction=env.instruction,
                        task=env.task,
                        success=success,
                        success_labeled_by="env",
                        policy_id="expert",
                        robot=f"maniskill:{env.task}",
                        split=env.split.name,
                        seed=ep_seed,
                        extra={
                            "steps": int(info["elapsed_steps"]),
                            "category": env.split.category,
                            "expert_style": expert_style,
                        },
                    )
                    writer.end_episode(meta)
                    written += 1
                    seeds.append(ep_seed)
                    bar.update(1)
                else:
                    writer.discard_episode()
                bar.set_postfix(success=f"{successes}/{attempted}")
                ep_seed += 1
    finally:
        if own_env:
            env.close()
    return {
        "written": written,
        "attempted": attempted,
        "successes": successes,
        "store": str(store_path),
        "seeds": seeds,
    }
