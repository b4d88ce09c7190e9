"""Run directories: where every training / evaluation run writes what it produced.

Layout of ``runs/<name>/<timestamp>/``::

    config.yaml         the resolved, validated configuration
    metrics.jsonl       one JSON object per logged step (``{"step": .., "time": .., ...}``)
    tb/                 TensorBoard event files with the same scalars
    checkpoints/        checkpoints (training) -- see ``simbridge.training.checkpoint``
    run.json            name, start time, host, git commit, software version

Use as a context manager so that files are flushed even when the run fails.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from simbridge.data.config import to_dict


def software_version() -> str:
    """``simbridge <version> (<git commit>)`` where known: recorded with every run and episode."""
    try:
        from importlib.metadata import version

        v = version("simbridge")
    except Exception:
        v = "unknown"
    commit = git_commit()
    return f"simbridge {v}" + (f" ({commit})" if commit else "")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def new_run_path(root: str | Path, name: str) -> Path:
    """``<root>/<name>/<YYYYmmdd-HHMMSS>``, suffixed ``-1``, ``-2``, ... when it exists: the one name of
    every run's directory (training runs, evaluations, reports), so that ``runs/`` lists by name and time."""
    base = Path(root) / name / datetime.now().strftime("%Y%m%d-%H%M%S")
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


class RunDir:
    """A run's output directory with JSONL + TensorBoard metric logging."""

    def __init__(self, path: str | Path, config: Any | None = None, tensorboard: bool = True):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.path / "checkpoints"
        self.checkpoints.mkdir(exist_ok=True)
        if config is not None:
            cfg = config if isinstance(config, dict) else to_dict(config)
            (self.path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        info_path = self.path / "run.json"
        if not info_path.exists():
            info = {
                "name": self.path.parent.name,
                "started": datetime.now().isoformat(timespec="seconds"),
                "host": socket.gethostname(),
                "software_version": software_version(),
            }
            info_path.write_text(json.dumps(info, indent=2))
        self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"))

    @classmethod
    def create(cls, root: str | Path, name: str, config: Any | None = None, **kw: Any) -> RunDir:
        """A fresh ``<root>/<name>/<YYYYmmdd-HHMMSS>`` directory (suffixed if it exists)."""
        return cls(new_run_path(root, name), config=config, **kw)

    def log(self, step: int, **metrics: float | int | str) -> None:
        """Append one metrics record; numbers also go to TensorBoard."""
        record = {"step": int(step), "time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(k, v, int(step))

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as JSON atomically (temporary file, then rename)."""
        target = self.path / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=_jsonable))
        os.replace(tmp, target)
        return target

    def close(self) -> None:
        if not self._metrics.closed:
            self._metrics.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict]:
    """Read ``metrics.jsonl`` of a run directory (or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    with open(p) as f:
        return [json.loads(line) for line in f if line.strip()]


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return v
