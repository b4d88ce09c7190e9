"""What an SFT run reports at its end: the loss curves, the teacher-forced action error per phase
in mm / rad (``action_error.txt``, :mod:`.action_error`) and the success rate in simulation."""

from __future__ import annotations

from pathlib import Path

from simbridge.training.sft.config import SFTConfig


def evaluate_on_training_distribution(checkpoint: Path, cfg: SFTConfig, run_path: Path) -> dict:
    """Success rate on the training split(s) through the simulation harness, when it can run here."""
    try:
        from simbridge.training.envs import EnvUnavailable
        from simbridge.training.evaluation import evaluate, load_policy_source
    except ImportError as exc:  # SFT on robot data does not need the simulation extra
        return {"skipped": f"simulation evaluation harness unavailable: {exc}"}
    source = load_policy_source(str(checkpoint), kind="checkpoint")
    try:
        return evaluate(source, suite=cfg.eval.suite, episodes=cfg.eval.episodes, seed=cfg.eval.seed,
                        run_dir=run_path / "eval", progress=cfg.progress, spec=cfg.eval.env)  # fmt: skip
    except EnvUnavailable as exc:
        return {"skipped": f"simulator unavailable: {exc}"}


def write_action_error(run_path: Path, action_error: dict) -> Path:
    """``action_error.txt``: the table of :func:`~.action_error.format_action_error` and what it was measured on."""
    from simbridge.training.sft.action_error import format_action_error

    out = run_path / "action_error.txt"
    out.write_text(f"teacher-forced action error on the {action_error['episodes']} episodes "
                   f"(phases from the label actions)\n{format_action_error(action_error['phases'])}\n")  # fmt: skip
    return out


def plot_losses(run_path: Path) -> Path | None:
    """PNG of the training / validation loss curves next to metrics.jsonl."""
    from simbridge.data.runs import read_metrics

    records = read_metrics(run_path)
    train = [(r["step"], r["train/loss"]) for r in records if "train/loss" in r]
    val = [(r["step"], r["val/loss"]) for r in records if "val/loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*train, strict=True), label="train")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("action-token loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    out = run_path / "loss.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
