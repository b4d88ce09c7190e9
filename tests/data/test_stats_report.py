"""Statistics against known values, and the report on a small fixture of episodes."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from simbridge.data.report import ReportError, build_report, read_source, write_report
from simbridge.data.stats import exact_test, rate, wilson_interval


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Reference values: statsmodels proportion_confint(method="wilson") / Wilson (1927).
        (8, 10, 0.4901624, 0.9433178),
        (0, 10, 0.0, 0.2775328),
        (10, 10, 0.7224672, 1.0),
        (1, 2, 0.0945312, 0.9054688),
    ],
)
def test_wilson_interval_known_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-6) and hi == pytest.approx(high, abs=1e-6)


def test_wilson_interval_edge_cases():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    r = rate(3, 4)
    assert r.rate == 0.75 and r.low < 0.75 < r.high


def test_fisher_exact_known_values():
    # Fisher's lady-tasting-tea table [[3, 1], [1, 3]]: two-sided p = 34/70.
    assert exact_test(3, 4, 1, 4) == pytest.approx(34 / 70, abs=1e-9)
    # [[8, 2], [1, 5]] -> two-sided p = 0.03496503...
    assert exact_test(8, 10, 1, 6) == pytest.approx(0.034965034965, abs=1e-9)
    assert exact_test(5, 10, 5, 10) == pytest.approx(1.0)


def _write_run(path, policy, rows):
    path.mkdir(parents=True)
    with open(path / "episodes.jsonl", "w") as f:
        for i, (split, category, success) in enumerate(rows):
            f.write(
                json.dumps(
                    {
                        "policy": policy,
                        "split": split,
                        "category": category,
                        "seed": i,
                        "episode": i,
                        "success": success,
                        "steps": 40,
                        "instruction": "x",
                    }
                )
                + "\n"
            )


@pytest.fixture()
def two_runs(tmp_path):
    sft = [("train", "train", True)] * 8 + [("train", "train", False)] * 2
    sft += [("unseen_positions", "execution", True)] * 3 + [("unseen_positions", "execution", False)] * 7
    sft += [("unseen_table", "vision", True)] * 6 + [("unseen_table", "vision", False)] * 4
    ppo = [("train", "train", True)] * 10
    ppo += [("unseen_positions", "execution", True)] * 9 + [("unseen_positions", "execution", False)] * 1
    ppo += [("unseen_table", "vision", True)] * 6 + [("unseen_table", "vision", False)] * 4
    _write_run(tmp_path / "sft_run", "sft-tiny", sft)
    _write_run(tmp_path / "ppo_run", "ppo-tiny", ppo)
    return tmp_path


def test_report_rates_diffs_and_files(two_runs):
    out = two_runs / "report"
    report = write_report([str(two_runs / "sft_run"), str(two_runs / "ppo_run")], out)
    assert report.baseline == "sft-tiny" and report.policies == ["sft-tiny", "ppo-tiny"]
    rows = {(r.category, r.condition): r for r in report.rows}
    ex = rows[("execution", "unseen_positions")]
    assert ex.rates["sft-tiny"].successes == 3 and ex.rates["ppo-tiny"].successes == 9
    diff, p = ex.diffs["ppo-tiny"]
    assert diff == pytest.approx(0.6) and p == pytest.approx(exact_test(9, 10, 3, 10))
    assert rows[("vision", "unseen_table")].diffs["ppo-tiny"][0] == pytest.approx(0.0)
    overall = rows[("overall", "all")]
    assert overall.rates["ppo-tiny"].trials == 30 and overall.rates["ppo-tiny"].successes == 25
    # Categories come in the vision / semantics / execution order after train.
    cats = [r.category for r in report.rows]
    assert cats.index("train") < cats.index("vision") < cats.index("execution") < cats.index("overall")
    md = (out / "report.md").read_text()
    assert "unseen_positions" in md and "+60.0 pts" in md
    assert json.loads((out / "report.json").read_text())["baseline"] == "sft-tiny"
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_and_baseline_choice(two_runs):
    report = write_report(
        [f"rl={two_runs / 'ppo_run'}", f"bc={two_runs / 'sft_run'}"], two_runs / "r2", baseline="bc"
    )
    assert report.policies == ["bc", "rl"]
    with pytest.raises(ReportError, match="baseline"):
        build_report(read_source(two_runs / "ppo_run")[0], baseline="nope")


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        read_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="neither an evaluation run"):
        read_source(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "episodes.jsonl").write_text('{"policy": "a"}\n')
    with pytest.raises(ReportError, match="line 1"):
        read_source(tmp_path / "bad")


def test_report_cli(two_runs):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "simbridge.data.cli",
            "report",
            str(two_runs / "sft_run"),
            str(two_runs / "ppo_run"),
            "-o",
            str(two_runs / "cli_report"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "unseen_positions" in out.stdout and (two_runs / "cli_report" / "report.png").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "simbridge.data.cli", "report"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "required" in bad.stderr
