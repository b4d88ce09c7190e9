"""What ``simbridge eval`` reports: the summary of its episodes, the printed table and the plot.

:func:`summarize` turns the episode records of :func:`simbridge.training.evaluation.evaluate`
into ``summary.json``: per split, per category and overall success with Wilson 95% intervals,
grasp rate, mean steps and ``failures`` (the number of failed episodes in each class of
:mod:`simbridge.training.failure_analysis`). :func:`format_table` prints it, :func:`plot_summary`
draws ``summary.png`` (success with intervals; every episode's outcome, stacked by failure class).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from simbridge.training.failure_analysis import FAILURE_CLASSES

#: Bar colours of the splits' categories and of the failure classes.
CATEGORY_COLOURS = {"train": "#4c72b0", "vision": "#55a868", "semantics": "#c44e52", "execution": "#8172b2"}
FAILURE_COLOURS = {
    "never_reached": "#8c8c8c",
    "closed_off_target": "#dd8452",
    "closed_too_high": "#ccb974",
    "dropped_in_transit": "#c44e52",
    "released_off_target": "#8172b3",
    "timed_out": "#64b5cd",
    "unclassified": "#333333",
}


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score 95% interval of a success rate (``(nan, nan)`` for no trials)."""
    if trials == 0:
        return (float("nan"), float("nan"))
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return (
        max(0.0, centre - half) if successes else 0.0,
        min(1.0, centre + half) if successes < trials else 1.0,
    )


def failure_counts(rows: list[dict]) -> dict[str, int]:
    """Failed episodes per failure class (every class, zeros included; old records: ``unclassified``)."""
    counts = dict.fromkeys(FAILURE_CLASSES, 0)
    for r in rows:
        if not r["success"]:
            counts[r.get("failure") or "unclassified"] += 1
    return counts


def _block(rows: list[dict]) -> dict:
    n, k = len(rows), sum(r["success"] for r in rows)
    lo, hi = wilson_interval(k, n)
    grasps = [r["grasped"] for r in rows if r.get("grasped") is not None]
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else float("nan"),
        "ci95_low": lo,
        "ci95_high": hi,
        "grasp_rate": sum(grasps) / len(grasps) if grasps else None,
        "mean_steps": float(np.mean([r["steps"] for r in rows])) if rows else float("nan"),
        "failures": failure_counts(rows),
    }


def summarize(records: list[dict], policy_name: str, meta: dict) -> dict:
    """``summary.json``: per split, per category and overall blocks (see module docstring)."""
    splits: dict[str, dict] = {}
    for name in dict.fromkeys(r["split"] for r in records):
        rows = [r for r in records if r["split"] == name]
        splits[name] = {"category": rows[0]["category"], **_block(rows)}
    categories = {
        cat: _block([r for r in records if r["category"] == cat])
        for cat in dict.fromkeys(r["category"] for r in records)
    }
    return {"policy": policy_name, **meta, "splits": splits, "categories": categories, "overall": _block(records)}


def _present_classes(summary: dict) -> list[str]:
    """Failure classes with at least one episode anywhere in the summary (table columns, plot layers)."""
    blocks = [*summary["splits"].values(), *summary["categories"].values()]
    return [c for c in FAILURE_CLASSES if any(b.get("failures", {}).get(c, 0) for b in blocks)]


def plot_summary(summary: dict, path: Path) -> Path:
    """Per-split success with Wilson 95% intervals (coloured by category) and, below, every
    episode's outcome per split: success, then the failed episodes stacked by failure class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["splits"])
    s = summary["splits"]
    x = np.arange(len(names))
    rates = np.array([s[n]["success_rate"] for n in names])
    err = np.array(
        [
            [s[n]["success_rate"] - s[n]["ci95_low"] for n in names],
            [s[n]["ci95_high"] - s[n]["success_rate"] for n in names],
        ]
    )
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(6, 0.6 * len(names) + 3), 7.5), sharex=True)
    ax.bar(x, rates, yerr=err, capsize=3, color=[CATEGORY_COLOURS.get(s[n]["category"], "gray") for n in names])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (Wilson 95% CI)")
    ax.set_title(f"{summary['policy']} on {summary['task']} ({summary['episodes_per_split']} episodes/split)")
    episodes = np.array([max(1, s[n]["episodes"]) for n in names], dtype=float)
    bottom = np.array([s[n]["successes"] for n in names]) / episodes
    ax2.bar(x, bottom, color="#55a868", label="success")
    for cls in _present_classes(summary):
        share = np.array([s[n].get("failures", {}).get(cls, 0) for n in names]) / episodes
        ax2.bar(x, share, bottom=bottom, color=FAILURE_COLOURS.get(cls, "gray"), label=cls)
        bottom = bottom + share
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("share of episodes")
    ax2.set_title("outcome of every episode (failures by class)", fontsize=9)
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax2.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_table(summary: dict) -> str:
    """The summary as plain text (printed by ``simbridge eval``): success per split and category,
    then, when any episode failed, the failed episodes per failure class."""

    def row(name: str, category: str, r: dict) -> str:
        grasp = "" if r.get("grasp_rate") is None else f"{100 * r['grasp_rate']:6.1f}%"
        return (
            f"{name:32s} {category:10s} {100 * r['success_rate']:7.1f}%  "
            f"[{100 * r['ci95_low']:5.1f}, {100 * r['ci95_high']:5.1f}]  {r['episodes']:4d}  {grasp:>7s}"
        )

    lines = [f"{'split':32s} {'category':10s} {'success':>8s}  {'95% CI':>15s}  {'n':>4s}  {'grasped':>7s}"]
    lines += [row(name, r["category"], r) for name, r in summary["splits"].items()]
    lines += [row(f"(all {name})", "", r) for name, r in summary["categories"].items()]
    classes = _present_classes(summary)
    if classes:
        lines += ["", f"{'failed episodes by class':32s} " + " ".join(f"{c:>{len(c)}s}" for c in classes)]
        blocks = [*summary["splits"].items(), *((f"(all {k})", v) for k, v in summary["categories"].items())]
        for name, r in blocks:
            counts = r.get("failures", {})
            lines.append(f"{name:32s} " + " ".join(f"{counts.get(c, 0):>{len(c)}d}" for c in classes))
    return "\n".join(lines)
