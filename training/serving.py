"""``simbridge serve``: a torch checkpoint behind a websocket, for policies that do not belong in a bundle.

A 7B OpenVLA in bf16 wants a GPU, torch and its own process; exporting it to ONNX for the robot PC
is not always possible or wanted. :class:`ServedPolicy` loads a checkpoint on ``device`` (``auto``:
CUDA when torch sees one, else CPU) in ``dtype`` (``auto``: bf16 on a GPU that supports it, else
fp32; ``bf16`` casts the weights and the float inputs), optionally compiles its action decoding
with ``torch.compile``, and runs one warm-up prediction before the port opens.
:class:`PolicyServer` answers :mod:`simbridge.deploy.serving_protocol` requests on it, one at a
time (one model, one lock; requests of several clients queue). Actions are greedy: the most likely
bin of every action token, as ``simbridge eval`` and the exported bundle decode.

The client is :class:`simbridge.deploy.remote_policy.RemotePolicy` (no torch)::

    simbridge serve --policy runs/ppo/<stamp>/checkpoints/iter_000100 --host 0.0.0.0   # GPU box
    ros2 launch simbridge_ros robot_eval.launch.py bundle:=ws://gpu-box:8765 ...        # robot PC
    simbridge eval --policy ws://127.0.0.1:8765 --suite train --episodes 5

At connect the client gets the policy contract and a manifest-like description: the identity
``ckpt-<sha256 prefix>`` of the checkpoint directory (the same ``checkpoint_sha256`` a bundle
exported from it records), family, preset, chunk size, the action normalization, device, dtype.

No authentication and no encryption: bind to loopback (the default) or a trusted robot network,
or reach the server through an SSH tunnel (``ssh -L 8765:127.0.0.1:8765 gpu-box``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simbridge.data.spec import ContractError, Observation, PolicyContract
from simbridge.deploy.serving_protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL,
    ActionChunk,
    ErrorReply,
    InferRequest,
    ProtocolError,
    ServerHello,
    decode,
    encode,
)

__all__ = ["PolicyServer", "ServedPolicy", "resolve_device", "resolve_dtype", "warmup_observation"]

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_device(device: str) -> torch.device:
    """``auto``: ``cuda`` when torch sees a GPU, else ``cpu``; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device: {device!r} is not a torch device (auto, cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU "
                         "(a CPU build of torch?); use --device cpu or install a CUDA build")  # fmt: skip
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a CUDA GPU that supports it, fp32 otherwise (CPU bf16 is slower, not faster)."""
    if dtype == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype: one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def warmup_observation(contract: PolicyContract) -> Observation:
    """A valid observation of ``contract`` (grey images, the arm near its home pose)."""
    return Observation(
        images={c.name: np.full(c.shape, 128, np.uint8) for c in contract.observation.cameras},
        ee_pose=np.array([0.4, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0]), gripper_width=0.04,
        joint_positions=np.zeros(7), instruction="warm up", timestamp=0.0,
    )  # fmt: skip


class ServedPolicy:
    """A checkpoint loaded for serving: ``predict(obs) -> (chunk_size, 7)`` float32, greedy."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", dtype: str = "auto",
                 compile: bool = False, warmup: bool = True) -> None:  # fmt: skip
        from simbridge.deploy.bundle import hash_tree
        from simbridge.training.checkpoint import checkpoint_meta, load_checkpoint, resolve_checkpoint

        t0 = time.perf_counter()
        self.path = resolve_checkpoint(checkpoint)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.policy = load_checkpoint(self.path, device=self.device).to(self.dtype).eval()
        self.contract: PolicyContract = self.policy.contract
        self.checkpoint_sha256 = hash_tree(self.path)
        self.policy_id = f"ckpt-{self.checkpoint_sha256[:16]}"
        self.compiled = bool(compile)
        # Bound method, compiled as a function: act() calls several submodules, not forward().
        self._act: Callable[..., Any] = torch.compile(self.policy.act, dynamic=True) if compile else self.policy.act
        meta = checkpoint_meta(self.path)
        self.description = _plain({
            "family": self.policy.config.family,
            "preset": self.policy.config.preset,
            "chunk_size": self.contract.chunk_size,
            "source": {"checkpoint": str(self.path), "checkpoint_name": self.path.name,
                       "checkpoint_sha256": self.checkpoint_sha256,
                       **{k: meta[k] for k in ("iteration", "metrics", "time") if k in meta}},
            "action": {"normalization": self.policy.action_stats.to_dict(), "decoding": "greedy",
                       "output": "regression" if getattr(self.policy.config, "use_regression_head", False) else "bins"},
            "runtime": {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                        "compiled": self.compiled, "torch": torch.__version__},
        })  # fmt: skip
        self.warmup_s = 0.0
        if warmup:  # the first call pays for allocation (and compilation): not the first client
            t1 = time.perf_counter()
            self.predict(warmup_observation(self.contract))
            self.warmup_s = time.perf_counter() - t1
        self.load_seconds = time.perf_counter() - t0

    @torch.inference_mode()
    def predict(self, obs: Observation) -> np.ndarray:
        batch = self.policy.prepare([obs])
        batch = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in batch.items()}
        out = self._act(batch, deterministic=True)
        return out.actions[0].float().cpu().numpy().astype(np.float32)

    def hello(self) -> ServerHello:
        return ServerHello(protocol=PROTOCOL, policy_id=self.policy_id, contract=self.contract.to_dict(),
                           description=self.description)  # fmt: skip


class PolicyServer:
    """Serves one :class:`ServedPolicy` over websockets (a thread per connection, one lock for the model)."""

    def __init__(self, served: ServedPolicy, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.served, self.host, self.port = served, host, int(port)
        self._lock = threading.Lock()
        self._server: Any = None
        self.requests = 0

    def serve_forever(self, ready: Callable[[str], None] | None = None) -> None:
        """Open the port (``port=0``: a free one) and answer until :meth:`shutdown` or Ctrl-C."""
        from websockets.sync.server import serve

        with serve(self._handle, self.host, self.port, compression=None, max_size=MAX_FRAME_BYTES) as server:
            self._server = server
            self.port = int(server.socket.getsockname()[1])
            if ready is not None:
                ready(self.url)
            server.serve_forever()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        peer = getattr(ws, "remote_address", "?")
        log.info("client %s connected", peer)
        try:
            ws.send(encode(self.served.hello()))
            for frame in ws:
                ws.send(encode(self.answer(frame)))
        except ConnectionClosed:
            pass
        log.info("client %s disconnected", peer)

    def answer(self, frame: bytes | str) -> ActionChunk | ErrorReply:
        """The reply to one frame: an action chunk, or an error naming what was wrong."""
        try:
            request = decode(frame, expect=(InferRequest,))
        except ProtocolError as exc:
            return ErrorReply(request_id=-1, kind="protocol", message=str(exc))
        rid = request.request_id
        try:
            obs = request.observation().validate(self.served.contract.observation)
            with self._lock:
                t0 = time.perf_counter()
                actions = self.served.predict(obs)
                took = time.perf_counter() - t0
                self.requests += 1
        except ContractError as exc:
            return ErrorReply(request_id=rid, kind="contract", message=str(exc))
        except Exception as exc:  # the model failed: tell the client (it fails closed), keep serving
            log.exception("request %d failed", rid)
            return ErrorReply(request_id=rid, kind="server", message=f"{type(exc).__name__}: {exc}")
        return ActionChunk(request_id=rid, stamp=request.stamp, actions=actions, inference_s=took)


def _plain(obj: Any) -> Any:
    """JSON-able copy (msgpack sends the same types)."""
    return json.loads(json.dumps(obj, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
