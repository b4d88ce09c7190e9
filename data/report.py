"""The SFT-vs-RL generalization report.

Reads evaluation results from two kinds of sources and treats them alike:

* simulation evaluation runs (``simbridge eval``): a run directory with ``episodes.jsonl``,
  one JSON object per episode with ``policy``, ``split``, ``category`` and ``success``;
* hardware (or twin) evaluation episodes in a zarr episode store: per-episode metadata with
  ``policy_id``, ``split`` (the protocol condition), ``success`` (operator label) and
  ``extra["category"]``.

For every condition it gives each policy's success rate with a Wilson 95% interval and the
difference of each policy to the baseline (the SFT policy) with a two-sided Fisher exact
p-value, grouped by category (vision / semantics / execution), then writes ``report.md``,
``report.json`` and a bar chart ``report.png``. When the episodes of an evaluation run carry a
``failure`` class (``simbridge eval`` on PutOnTarget, see ``simbridge.training.failure_analysis``)
the report also counts each policy's failed episodes per class and condition (episode stores do
not record failure classes: their failures are left out of that table).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simbridge.data.stats import Rate, exact_test, rate

CATEGORY_ORDER = ("train", "vision", "semantics", "execution", "other")


class ReportError(ValueError):
    """A source could not be read; the message names it and says what was expected."""


@dataclass(frozen=True)
class EpisodeResult:
    policy: str
    condition: str
    category: str
    success: bool
    source: str = ""
    failure: str | None = None  # why a failed episode failed (eval runs that record it)


@dataclass
class ConditionRow:
    category: str
    condition: str
    rates: dict[str, Rate]
    diffs: dict[str, tuple[float, float]] = field(default_factory=dict)  # policy -> (diff, p-value)
    failures: dict[str, dict[str, int]] = field(default_factory=dict)  # policy -> failure class -> count


@dataclass
class Report:
    policies: list[str]
    baseline: str
    rows: list[ConditionRow]  # per condition, then one "all" row per category, then overall
    unlabelled: int = 0

    def to_dict(self) -> dict:
        return {
            "policies": self.policies,
            "baseline": self.baseline,
            "unlabelled_episodes": self.unlabelled,
            "rows": [
                {
                    "category": r.category,
                    "condition": r.condition,
                    "rates": {p: {**asdict(x), "rate": x.rate} for p, x in r.rates.items()},
                    "diffs": {p: {"diff": d, "p_value": pv} for p, (d, pv) in r.diffs.items()},
                    **({"failures": r.failures} if r.failures else {}),
                }
                for r in self.rows
            ],
        }


# --- reading -------------------------------------------------------------------------------


def parse_source(spec: str) -> tuple[str | None, Path]:
    """``"label=path"`` or ``"path"`` -> (label or None, path)."""
    label, sep, path = spec.partition("=")
    if sep and label and "/" not in label:
        return label, Path(path)
    return None, Path(spec)


def read_source(path: Path, label: str | None = None, policy_names: Mapping[str, str] | None = None) -> tuple[list[EpisodeResult], int]:
    """Episode results of one source and the number of unlabelled episodes skipped."""
    if not path.exists():
        raise ReportError(f"{path} does not exist: pass a `simbridge eval` run directory or an episode store")
    if (path / "episodes.jsonl").is_file():
        return _read_eval_run(path, label), 0
    if (path / "zarr.json").is_file():
        return _read_store(path, label, policy_names or {})
    raise ReportError(
        f"{path} is neither an evaluation run (no episodes.jsonl) nor a zarr episode store (no zarr.json)"
    )


def _read_eval_run(path: Path, label: str | None) -> list[EpisodeResult]:
    results = []
    with open(path / "episodes.jsonl") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                results.append(
                    EpisodeResult(
                        policy=label or str(rec["policy"]),
                        condition=str(rec["split"]),
                        category=str(rec.get("category") or "other"),
                        success=bool(rec["success"]),
                        source=str(path),
                        failure=rec.get("failure") if not rec["success"] else None,
                    )
                )
            except (json.JSONDecodeError, KeyError) as exc:
                raise ReportError(f"{path / 'episodes.jsonl'} line {n}: {exc!r} (needs policy, split, success)") from exc
    return results


def _read_store(path: Path, label: str | None, policy_names: Mapping[str, str]) -> tuple[list[EpisodeResult], int]:
    from simbridge.data.store import EpisodeStore

    store = EpisodeStore(path)
    results, unlabelled = [], 0
    for i in range(len(store)):
        meta = store.meta(i)
        if meta.success is None:
            unlabelled += 1
            continue
        policy = label or policy_names.get(meta.policy_id, meta.policy_id or "unknown")
        results.append(
            EpisodeResult(
                policy=policy,
                condition=meta.split or "unspecified",
                category=str(meta.extra.get("category") or "other"),
                success=bool(meta.success),
                source=str(path),
            )
        )
    return results, unlabelled


# --- building ------------------------------------------------------------------------------


def build_report(results: Iterable[EpisodeResult], baseline: str | None = None, unlabelled: int = 0) -> Report:
    results = list(results)
    if not results:
        raise ReportError("no labelled episodes in the given sources")
    policies = sorted({r.policy for r in results})
    if baseline is None:
        baseline = next((p for p in policies if "sft" in p.lower()), policies[0])
    elif baseline not in policies:
        raise ReportError(f"baseline {baseline!r} is not among the policies {policies}")
    policies = [baseline] + [p for p in policies if p != baseline]

    counts: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    failures: dict[tuple[str, str], dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        for key in ((r.category, r.condition), (r.category, "all"), ("overall", "all")):
            c = counts[key][r.policy]
            c[0] += int(r.success)
            c[1] += 1
            if r.failure is not None:
                per_class = failures[key][r.policy]
                per_class[r.failure] = per_class.get(r.failure, 0) + 1

    def order(key: tuple[str, str]) -> tuple:
        cat, cond = key
        ci = CATEGORY_ORDER.index(cat) if cat in CATEGORY_ORDER else len(CATEGORY_ORDER) + (cat == "overall")
        return (ci, cond == "all", cond)

    rows = []
    for key in sorted(counts, key=order):
        per_policy = counts[key]
        rates = {p: rate(*per_policy[p]) for p in policies if p in per_policy}
        row = ConditionRow(category=key[0], condition=key[1], rates=rates,
                           failures={p: dict(failures[key][p]) for p in policies if failures[key].get(p)})  # fmt: skip
        if baseline in rates:
            b = rates[baseline]
            for p, x in rates.items():
                if p != baseline:
                    row.diffs[p] = (x.rate - b.rate, exact_test(x.successes, x.trials, b.successes, b.trials))
        rows.append(row)
    return Report(policies=policies, baseline=baseline, rows=rows, unlabelled=unlabelled)


# --- writing -------------------------------------------------------------------------------


def to_markdown(report: Report, title: str = "SFT vs RL generalization report") -> str:
    others = report.policies[1:]
    head = ["category", "condition", *report.policies, *[f"{p} - {report.baseline} (p)" for p in others]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report.rows:
        cells = [row.category, f"**{row.condition}**" if row.condition == "all" else row.condition]
        cells += [str(row.rates[p]) if p in row.rates else "-" for p in report.policies]
        for p in others:
            if p in row.diffs:
                d, pv = row.diffs[p]
                cells.append(f"{100 * d:+.1f} pts (p={pv:.3g})")
            else:
                cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        f"Success rates with Wilson 95% intervals; differences against the baseline `{report.baseline}` "
        "with two-sided Fisher exact test p-values.",
    ]
    if report.unlabelled:
        notes.append(f"{report.unlabelled} episode(s) without a success label were left out.")
    return "\n".join([f"# {title}", "", *lines, *notes, *_failure_table(report), ""])


def _failure_table(report: Report) -> list[str]:
    """Markdown lines counting failed episodes per failure class (none when no episode has a class)."""
    classes = list(dict.fromkeys(c for row in report.rows for f in row.failures.values() for c in f))
    if not classes:
        return []
    head = ["category", "condition", "policy", *classes]
    lines = ["", "## Failed episodes by class", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report.rows:
        for p in report.policies:
            if p in row.failures:
                cond = f"**{row.condition}**" if row.condition == "all" else row.condition
                counts = [str(row.failures[p].get(c, 0)) for c in classes]
                lines.append("| " + " | ".join([row.category, cond, p, *counts]) + " |")
    lines += ["", "Classes from privileged simulator state (`simbridge eval`); episode stores carry none."]
    return lines


def plot(report: Report, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in report.rows if r.category != "overall"]
    labels = [f"{r.category}\n{r.condition}" if r.condition == "all" else r.condition for r in rows]
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(report.policies))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.5))
    for i, policy in enumerate(report.policies):
        vals = np.array([r.rates[policy].rate if policy in r.rates else np.nan for r in rows])
        lo = np.array([r.rates[policy].low if policy in r.rates else np.nan for r in rows])
        hi = np.array([r.rates[policy].high if policy in r.rates else np.nan for r in rows])
        err = np.nan_to_num(np.vstack([vals - lo, hi - vals]))
        pos = x + (i - (len(report.policies) - 1) / 2) * width
        ax.bar(pos, 100 * vals, width, yerr=100 * err, capsize=2, label=policy)
        # k/n above every interval: a 0% bar is invisible, and n says how much the interval means.
        for px, r in zip(pos, rows, strict=True):
            if policy in r.rates:
                rate = r.rates[policy]
                ax.text(px, 100 * rate.high + 1.5, f"{rate.successes}/{rate.trials}", ha="center",
                        va="bottom", fontsize=6)
    for j, r in enumerate(rows):
        if j and rows[j - 1].category != r.category:
            ax.axvline(j - 0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title("Success per condition (Wilson 95% intervals; successes/episodes above each bar)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    sources: Sequence[str], out_dir: Path, baseline: str | None = None, policy_names: Mapping[str, str] | None = None,
    title: str = "SFT vs RL generalization report",
) -> Report:
    """Read ``sources`` (``[label=]path``), build the report and write md/json/png to ``out_dir``."""
    results, unlabelled = [], 0
    for spec in sources:
        label, path = parse_source(spec)
        res, skipped = read_source(path, label, policy_names)
        results += res
        unlabelled += skipped
    report = build_report(results, baseline, unlabelled)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(to_markdown(report, title))
    (out_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    plot(report, out_dir / "report.png")
    return report
