"""The main job: the whole SimBridge data flow on the embedded default, end to end.

    simbridge demo                      # what `make demo` runs
    simbridge demo --config launch/configs/demo.yaml sft.optim.steps=2000

With no robot and no GPU it runs, in order, each stage writing under one run directory
``runs/demo/<stamp>/``:

1. ``demos``   expert demonstrations in the ManiSkill task -> ``demos.zarr``
2. ``sft``     SFT of the tiny VLA on them                  -> ``sft/<stamp>/checkpoints``
3. ``ppo``     a short PPO run warm-started from SFT        -> ``ppo/<stamp>/checkpoints``
4. ``export``  both checkpoints to parity-checked ONNX bundles -> ``bundles/{sft,ppo}``
5. ``twin``    both bundles evaluated through the ROS 2 nodes (``simbridge deploy --sim``)
               against the franky-sim twin, episodes logged to ``twin_eval/episodes.zarr``
6. ``report``  the SFT-vs-RL comparison (markdown + PNG)     -> ``report/``

The stages are plain functions over the public APIs of each layer, so this file doubles as a
map of how the layers connect. ``--from-stage`` resumes a run directory at a given stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from simbridge.data.config import config, load_config, to_dict
from simbridge.data.runs import RunDir
from simbridge.training.envs.spec import SimEnvSpec
from simbridge.training.renamed_keys import renamed_keys, square

REPO = Path(__file__).resolve().parents[1]
STAGES = ("demos", "sft", "ppo", "export", "twin", "report")


@config
class DemoConfig:
    name: str = "demo"
    #: The run goes to ``<root>/<name>/<timestamp>/`` (the same key as SFT's ``root`` and RL's ``runner.root``).
    root: str = "runs"
    seed: int = 0
    #: Expert demonstrations for SFT (successful episodes written to the store).
    demos: int = 40
    #: The environment the demonstrations are recorded in (SFT's evaluation and PPO render the
    #: cameras of the checkpoint they start from).
    env: SimEnvSpec = field(default_factory=SimEnvSpec)
    sft_config: str = "launch/configs/sft_tiny.yaml"
    sft_overrides: list[str] = field(default_factory=list)
    ppo_config: str = "launch/configs/ppo_maniskill.yaml"
    ppo_overrides: list[str] = field(default_factory=list)
    #: Evaluation protocol run in the twin through the ROS 2 nodes (policies are filled in).
    protocol: str = "launch/protocols/twin_demo.yaml"
    episodes_per_condition: int = 2
    #: Seconds the twin evaluation may take at most before it is stopped (0 = no limit).
    twin_timeout_s: float = 900.0

    _renamed = renamed_keys({"run_root": "root", "camera_size": ("env.camera_size", square)})

    def __post_init__(self) -> None:
        if self.demos < 2:
            raise ValueError("demos: at least 2 (SFT keeps a validation episode)")
        if self.episodes_per_condition < 1:
            raise ValueError("episodes_per_condition: at least 1")


def _say(stage: int, text: str) -> None:
    print(f"\n[demo {stage}/{len(STAGES)}] {text}", flush=True)


def _path(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else REPO / path


def stage_demos(cfg: DemoConfig, out: Path) -> dict:
    from simbridge.training.envs.demos import write_expert_demos

    return write_expert_demos(out / "demos.zarr", cfg.demos, spec=cfg.env, seed=cfg.seed)


def stage_sft(cfg: DemoConfig, out: Path) -> Path:
    from simbridge.training.checkpoint import latest_checkpoint
    from simbridge.training.sft import SFTConfig, train_sft

    sft_cfg = load_config(
        SFTConfig, _path(cfg.sft_config),
        overrides=[f"data.store={out / 'demos.zarr'}", f"root={out}", "name=sft", f"seed={cfg.seed}",
                   *cfg.sft_overrides],
    )
    run_path = train_sft(sft_cfg)
    ckpt = latest_checkpoint(run_path)
    if ckpt is None:
        raise RuntimeError(f"SFT run {run_path} wrote no checkpoint")
    return ckpt


def stage_ppo(cfg: DemoConfig, out: Path, sft_checkpoint: Path) -> Path:
    from simbridge.training.checkpoint import latest_checkpoint
    from simbridge.training.rl.config import RLConfig
    from simbridge.training.rl.runner import train

    rl_cfg = load_config(
        RLConfig, _path(cfg.ppo_config),
        overrides=[f"policy.init_checkpoint={sft_checkpoint}", f"runner.root={out}", "runner.name=ppo",
                   f"runner.seed={cfg.seed}", *cfg.ppo_overrides],
    )
    run_path = train(rl_cfg)
    ckpt = latest_checkpoint(run_path)
    if ckpt is None:
        raise RuntimeError(f"PPO run {run_path} wrote no checkpoint")
    return ckpt


def stage_export(out: Path, checkpoints: dict[str, Path]) -> dict[str, Path]:
    from simbridge.deploy.export import ExportOptions, export_checkpoint

    bundles = {}
    for name, ckpt in checkpoints.items():
        options = ExportOptions(parity_store=out / "demos.zarr")
        result = export_checkpoint(ckpt, out / "bundles" / name, options=options, overwrite=True)
        bundles[name] = result.bundle
    return bundles


def stage_twin(cfg: DemoConfig, out: Path, bundles: dict[str, Path]) -> Path:
    """Evaluate the bundles with the ROS 2 nodes against the twin, in a child process.

    A child process gives the ROS 2 graph its own clean lifetime (and its own DDS domain).
    """
    protocol = yaml.safe_load(_path(cfg.protocol).read_text())
    protocol["policies"] = {name: str(path) for name, path in bundles.items()}
    protocol["episodes_per_condition"] = cfg.episodes_per_condition
    protocol["seed"] = cfg.seed
    eval_dir = out / "twin_eval"
    if eval_dir.exists():  # a re-run starts a fresh store; the earlier attempt is kept beside it
        eval_dir.rename(out / f"twin_eval.previous-{time.strftime('%Y%m%d-%H%M%S')}")
    eval_dir.mkdir(parents=True)
    protocol_file = eval_dir / "protocol.yaml"
    protocol_file.write_text(yaml.safe_dump(protocol, sort_keys=False))
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(50 + os.getpid() % 40))
    env.setdefault("MUJOCO_GL", "egl")
    cmd = [sys.executable, "-m", "simbridge.data.cli", "deploy", "--sim", "--protocol", str(protocol_file),
           "--log-dir", str(eval_dir)]
    # The policy node and the franka node talk over ROS 2 topics; the orchestrator resets the twin,
    # runs each trial for episode_time_s and labels success from the twin's object poses.
    print("$ " + " ".join(cmd), flush=True)
    timeout = cfg.twin_timeout_s or None
    proc = subprocess.run(cmd, env=env, cwd=REPO, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"twin evaluation failed (exit {proc.returncode}); see the output above")
    return eval_dir / "episodes.zarr"


def stage_report(out: Path, store: Path) -> Path:
    from simbridge.data.report import to_markdown, write_report

    report = write_report([str(store)], out / "report", baseline="sft")
    print(to_markdown(report), flush=True)
    return out / "report"


def run_demo(cfg: DemoConfig, run_dir: Path | None = None, from_stage: str = "demos") -> Path:
    """Run the stages from ``from_stage`` on; returns the run directory."""
    if from_stage not in STAGES:
        raise ValueError(f"from_stage: one of {STAGES}, got {from_stage!r}")
    if run_dir is None:
        run = RunDir.create(_path(cfg.root), cfg.name, config=cfg, tensorboard=False)
    else:
        run = RunDir(run_dir, tensorboard=False)
    out = run.path
    state_file = out / "demo_state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    todo = STAGES[STAGES.index(from_stage):]
    started = time.time()
    timings: dict[str, float] = dict(state.get("timings", {}))

    def done(stage: str, **values: Any) -> None:
        timings[stage] = round(time.time() - t0, 1)
        state.update(values, timings=timings)
        state_file.write_text(json.dumps(state, indent=2, default=str))
        run.log(STAGES.index(stage), stage=stage, seconds=timings[stage])

    print(f"SimBridge demo -> {out}", flush=True)
    with run:
        for stage in todo:
            t0 = time.time()
            n = STAGES.index(stage) + 1
            if stage == "demos":
                _say(n, f"expert demonstrations in the ManiSkill task ({cfg.demos} episodes)")
                done(stage, demos=stage_demos(cfg, out))
            elif stage == "sft":
                _say(n, "SFT of the tiny VLA on the demonstrations")
                done(stage, sft_checkpoint=str(stage_sft(cfg, out)))
            elif stage == "ppo":
                _say(n, "short PPO run, warm-started from the SFT checkpoint")
                done(stage, ppo_checkpoint=str(stage_ppo(cfg, out, Path(state["sft_checkpoint"]))))
            elif stage == "export":
                _say(n, "export both checkpoints to ONNX bundles (parity-checked)")
                ckpts = {"sft": Path(state["sft_checkpoint"]), "ppo": Path(state["ppo_checkpoint"])}
                done(stage, bundles={k: str(v) for k, v in stage_export(out, ckpts).items()})
            elif stage == "twin":
                _say(n, "evaluate both bundles through the ROS 2 nodes against the franky-sim twin")
                bundles = {k: Path(v) for k, v in state["bundles"].items()}
                done(stage, twin_store=str(stage_twin(cfg, out, bundles)))
            elif stage == "report":
                _say(n, "SFT vs RL comparison report")
                done(stage, report=str(stage_report(out, Path(state["twin_store"]))))
    total = time.time() - started
    print(f"\nSimBridge demo finished in {total / 60:.1f} min: {out}", flush=True)
    for stage, seconds in timings.items():
        print(f"  {stage:<7} {seconds:7.1f} s")
    print(f"  report: {out / 'report' / 'report.md'} and report.png")
    return out


def load_demo_config(path: str | None, overrides: list[str]) -> DemoConfig:
    return load_config(DemoConfig, _path(path) if path else None, overrides=overrides)


__all__ = ["STAGES", "DemoConfig", "load_demo_config", "run_demo", "to_dict"]
