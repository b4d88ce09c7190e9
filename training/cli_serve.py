"""``simbridge serve``: run a torch checkpoint as a policy server (see :mod:`simbridge.training.serving`).

    simbridge serve --policy runs/ppo/<stamp>/checkpoints/iter_000100               # ws://127.0.0.1:8765
    simbridge serve --policy <checkpoint> --host 0.0.0.0 --port 8765 --dtype bf16 --compile
    simbridge serve --policy <run dir>            # the run's latest checkpoint

Clients: ``bundle:=ws://host:port`` (the policy node's ``bundle`` parameter) and
``simbridge eval --policy ws://host:port``. When the port is open it prints one line,
``simbridge serve: <policy id> (...) on ws://<host>:<port> ...``; ``--port 0`` picks a free port
(the line says which). Ctrl-C stops it. The protocol: :mod:`simbridge.deploy.serving_protocol`.

Options are :class:`ServeConfig`: ``--config FILE``, one flag per field (``simbridge serve --help``)
and ``key=value`` overrides.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Literal

from simbridge.data.cli_config import add_config_arguments, config_from_args
from simbridge.data.config import ConfigError, config


@config
class ServeConfig:
    """``simbridge serve``'s options (``--config FILE``, ``--<field>`` flags, ``key=value``)."""

    #: Checkpoint directory (or a run directory: its latest checkpoint).
    policy: str = ""
    #: Address to bind. 127.0.0.1: this machine only; 0.0.0.0: every interface (no authentication!).
    host: str = "127.0.0.1"
    #: TCP port (0: a free one, printed when ready).
    port: int = 8765
    #: Torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ...
    device: str = "auto"
    #: Weights and activations: auto (bf16 on a CUDA GPU that supports it, else fp32), bf16 or fp32.
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    #: torch.compile the action decoding (slower start, faster requests on a GPU).
    compile: bool = False
    #: Log every connection (INFO).
    verbose: bool = False

    def __post_init__(self) -> None:
        if not self.policy:
            raise ValueError("policy: give a checkpoint directory (--policy runs/<name>/<stamp>/checkpoints/iter_N)")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port: 0..65535, got {self.port}")


CONFIG = ServeConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ServeConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, ServeConfig)
    logging.basicConfig(level=logging.INFO if cfg.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")  # fmt: skip
    from simbridge.training.checkpoint import CheckpointError
    from simbridge.training.serving import PolicyServer, ServedPolicy, resolve_device, resolve_dtype

    try:
        resolve_dtype(cfg.dtype, resolve_device(cfg.device))
    except ValueError as exc:  # a device / dtype this machine does not have
        raise ConfigError(str(exc)) from None
    try:
        served = ServedPolicy(cfg.policy, device=cfg.device, dtype=cfg.dtype, compile=cfg.compile)
    except (CheckpointError, FileNotFoundError) as exc:
        print(f"simbridge serve: {exc}", file=sys.stderr)
        return 1
    server = PolicyServer(served, cfg.host, cfg.port)
    d = served.description

    def ready(url: str) -> None:
        print(f"simbridge serve: {served.policy_id} ({d['family']}, chunk {d['chunk_size']}, "
              f"{d['runtime']['device']}, {d['runtime']['dtype']}{', compiled' if served.compiled else ''}; "
              f"loaded in {served.load_seconds:.1f} s) on {url}", flush=True)  # fmt: skip

    try:
        server.serve_forever(ready)
    except OSError as exc:  # the port is taken, the address is not this machine's
        print(f"simbridge serve: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
