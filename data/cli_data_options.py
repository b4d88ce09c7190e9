"""The options of every ``simbridge data`` command: one config dataclass each.

:mod:`simbridge.data.cli_data` derives each command's flags from these (``--config FILE``, one
flag per field, ``key=value``; see :mod:`simbridge.data.cli_config`) and runs the command with the
validated instance. A command on one store subclasses :class:`StoreCommand`: the store is its
first plain argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from simbridge.data.config import config


@config(kw_only=True)
class StoreCommand:
    """A command on one store, its first plain argument."""

    #: The episode store (.zarr).
    store: str


@config(kw_only=True)
class InfoCommand(StoreCommand):
    #: Also list every episode.
    episodes: bool = False
    #: Also plot lengths, success per split and interventions into this PNG.
    plot: Path | None = None


@config(kw_only=True)
class ValidateCommand(StoreCommand):
    #: Skip reading every chunk (no checksums).
    quick: bool = False
    #: Say what a repair would do: remove a half-created store, keep a killed writer's open episode as
    #: incomplete, drop uncommitted steps and temp files (changes nothing without --yes).
    repair: bool = False
    #: With --repair: carry the repair out.
    yes: bool = False


@config(kw_only=True)
class ReplayCommand(StoreCommand):
    #: Episode index (as listed by info --episodes).
    episode: int
    #: Task to replay in (default: the episode's task).
    env: str = ""
    #: Print the recorded steps instead of simulating.
    steps: bool = False


@config(kw_only=True)
class ToVideoCommand(StoreCommand):
    #: Episode index (as listed by info --episodes).
    episode: int
    #: Output .mp4 (default: <store>_ep<I>.mp4).
    out: Path | None = None
    #: Frame rate (default: from the timestamps).
    fps: float | None = None


@config(kw_only=True)
class MergeCommand:
    #: Store to append to (created if missing).
    out: str
    #: Stores whose episodes are appended (same cameras).
    sources: list[str]


@config(kw_only=True)
class SplitCommand(StoreCommand):
    #: Output directory: one <name>.zarr per part.
    out: Path
    #: Parts as name=fraction,... (fractions of the episodes).
    fractions: str = "train=0.9,val=0.1"
    #: Seed of the random partition.
    seed: int = 0

    def __post_init__(self) -> None:
        self.parts()

    def parts(self) -> dict[str, float]:
        """``fractions`` as {name: fraction}."""
        try:
            return {name.strip(): float(value) for name, _, value in (i.partition("=") for i in self.fractions.split(","))}
        except ValueError:
            raise ValueError(f"fractions: expected name=fraction,... (e.g. train=0.9,val=0.1), got {self.fractions!r}") from None


@config(kw_only=True)
class LabelCommand(StoreCommand):
    #: Episode index (as listed by info --episodes).
    episode: int
    #: The operator's label: --success, or --failure (= --no-success).
    success: bool
    #: Who labels, e.g. 'operator:alice'.
    by: str


@config(kw_only=True)
class ToLerobotCommand(StoreCommand):
    #: Output dataset directory.
    out: Path
    #: Frame rate (default: from the timestamps).
    fps: float | None = None
    #: Video codec.
    codec: Literal["av1", "h264"] = "av1"
    #: Only these episodes (default: all).
    episodes: list[int] | None = None
    #: Only episodes labelled successful.
    successful_only: bool = False
    #: Only episodes of this split.
    split: str | None = None
    #: Also export incomplete episodes (left out by default).
    include_incomplete: bool = False
    #: Export the proposed/clean action (e.g. DART's) as complementary_info.policy_action; auto: when every
    #: exported step has one.
    policy_action: Literal["auto", "always", "never"] = "auto"
    #: robot_type written into the dataset.
    robot_type: str = "franka"
    #: Replace a non-empty output directory.
    overwrite: bool = False
