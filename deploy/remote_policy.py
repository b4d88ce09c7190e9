"""A policy served by ``simbridge serve``, used exactly like a local bundle (no torch here).

Some policies do not belong in an ONNX bundle (a 7B checkpoint in bf16 on a GPU box, a model still
being trained). ``simbridge serve --policy <checkpoint>`` runs it behind a websocket
(:mod:`simbridge.training.serving`); :class:`RemotePolicy` is the client, with the interface of
:class:`~simbridge.deploy.runtime.BundlePolicy` (``contract``, ``predict(obs) -> (k, 7)``,
``reset()``), so the policy node and ``simbridge eval`` take it wherever they take a bundle, with the
same chunk executors and the same safety filter behind them::

    policy = RemotePolicy("ws://gpu-box:8765")                 # handshake: contract + description
    policy = RemotePolicy("ws://gpu-box:8765", contract=mine)  # and refuse any other contract
    chunk = policy.predict(obs)                                 # (chunk_size, 7) float32
    # ROS:  bundle:=ws://gpu-box:8765      eval:  simbridge eval --policy ws://gpu-box:8765

The wire format is :mod:`simbridge.deploy.serving_protocol`. Everything that goes wrong is a
:class:`PolicyServerError` (a :class:`~simbridge.data.spec.ContractError`: the CLIs print it on
one line) naming the server and the fix: an unreachable server, another protocol version, a
contract other than the one expected, a reply for another request, a chunk of the wrong shape.

Fail closed: if the connection breaks or the server does not answer within ``timeout_s``, that
call raises and so does every later :meth:`predict` of the episode (no actions: the robot's
watchdog stops the arm). :meth:`reset` (a new episode) reconnects, and refuses a server that now
serves another policy or contract than the one this client was built with.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from simbridge.data.spec import ContractError, Observation, PolicyContract
from simbridge.deploy.chunking import check_chunk
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

__all__ = ["PolicyServerError", "RemotePolicy", "contract_differences", "is_server_url"]


class PolicyServerError(ContractError):
    """The policy server cannot be used (unreachable, incompatible, crashed); names server and fix."""


def is_server_url(spec: str | Any) -> bool:
    """True for ``ws://host:port`` / ``wss://...``: a policy server, not a bundle directory."""
    return isinstance(spec, str) and spec.startswith(("ws://", "wss://"))


def contract_differences(got: dict[str, Any], want: dict[str, Any], where: str = "") -> list[str]:
    """``["observation.cameras: [...] != [...]", ...]``: where two contract dicts differ."""
    out: list[str] = []
    for key in sorted(set(got) | set(want)):
        a, b, path = got.get(key), want.get(key), f"{where}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += contract_differences(a, b, path + ".")
        elif a != b:
            out.append(f"{path}: {a!r} != {b!r}")
    return out


class RemotePolicy:
    """A :class:`~simbridge.data.spec.Policy` answered by a ``simbridge serve`` process."""

    contract: PolicyContract

    def __init__(
        self,
        url: str,
        *,
        contract: PolicyContract | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.port is None:
            raise PolicyServerError(f"policy server address {url!r} is not ws://host:port (e.g. ws://127.0.0.1:8765)")
        self.url, self.host, self.port = url, parts.hostname, parts.port
        self.timeout_s, self.connect_timeout_s = float(timeout_s), float(connect_timeout_s)
        self.expected = contract
        self._lock = threading.Lock()
        self._ws: Any = None
        self._broken = ""  # why the connection cannot be used until reset()
        self._next_id = 0
        self.last_round_trip_s = 0.0
        self.last_inference_s = 0.0
        hello = self._connect()
        self.hello = hello
        self.contract = hello.policy_contract()
        self.chunk_size = self.contract.chunk_size
        self.description: dict[str, Any] = hello.description

    # --- spec.Policy ------------------------------------------------------------------------------
    @property
    def policy_id(self) -> str:
        """The served weights' identity (``ckpt-<sha256 prefix>``), as a bundle's ``bundle_id``."""
        return self.hello.policy_id

    def predict(self, obs: Observation) -> np.ndarray:
        """``(k <= chunk_size, 7)`` float32 actions for ``obs``, computed by the server."""
        if not isinstance(obs, Observation):
            raise ContractError(f"expected a simbridge.data.spec.Observation, got {type(obs).__name__}")
        obs.validate(self.contract.observation)  # refuse locally what the server would refuse
        with self._lock:
            if self._broken:
                raise PolicyServerError(f"{self._broken}; no actions until reset() reconnects (fail closed)")
            self._next_id += 1
            request_id = self._next_id
            t0 = time.perf_counter()
            try:
                self._ws.send(encode(InferRequest.from_observation(obs, request_id)))
                frame = self._ws.recv(timeout=self.timeout_s)
            except TimeoutError:
                raise self._fail(f"policy server {self.url} did not answer request {request_id} within "
                                 f"{self.timeout_s:g} s (overloaded, or a slower device than planned: raise timeout_s)") from None  # fmt: skip
            except Exception as exc:  # ConnectionClosed, OSError: the server went away
                raise self._fail(f"policy server {self.url} closed the connection during request {request_id} "
                                 f"({_reason(exc)}): the server crashed or was stopped; restart 'simbridge serve'") from None  # fmt: skip
            self.last_round_trip_s = time.perf_counter() - t0
            try:
                reply = decode(frame, expect=(ActionChunk, ErrorReply))
            except ProtocolError as exc:
                raise self._fail(f"policy server {self.url} sent an invalid reply to request {request_id}: {exc}") from None
        if isinstance(reply, ErrorReply):
            if reply.kind == "contract":
                raise ContractError(f"policy server {self.url} refused the observation: {reply.message}")
            raise PolicyServerError(f"policy server {self.url} failed on request {request_id} "
                                    f"({reply.kind}): {reply.message}")  # fmt: skip
        if reply.request_id != request_id:
            raise self._fail(f"policy server {self.url} answered request {reply.request_id}, not {request_id}")
        self.last_inference_s = reply.inference_s
        return check_chunk(reply.actions, self.chunk_size).copy()  # frombuffer arrays are read-only

    def reset(self) -> None:
        """A new episode: the server is stateless per request; a broken connection is reopened."""
        with self._lock:
            if not self._broken:
                return
            hello = self._connect()
            if hello.policy_id != self.hello.policy_id or hello.contract != self.hello.contract:
                self._close()
                raise PolicyServerError(
                    f"policy server {self.url} now serves {hello.policy_id}, not {self.hello.policy_id} as when "
                    "this policy was loaded; load it again to switch policies"
                )
            self.hello, self._broken = hello, ""

    def close(self) -> None:
        with self._lock:
            self._close()
            self._broken = self._broken or f"{self!r} was closed"

    # --- connection -------------------------------------------------------------------------------
    def _connect(self) -> ServerHello:
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        fix = (f"start it there with 'simbridge serve --policy <checkpoint> --host {self.host} --port {self.port}'"
               ", or fix the address")  # fmt: skip
        try:
            self._ws = connect(self.url, open_timeout=self.connect_timeout_s, compression=None,
                               max_size=MAX_FRAME_BYTES, close_timeout=1.0, proxy=None)  # fmt: skip
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise PolicyServerError(f"cannot reach the policy server at {self.url} ({_reason(exc)}): {fix}") from None
        try:
            hello = decode(self._ws.recv(timeout=self.connect_timeout_s), expect=(ServerHello,))
        except Exception as exc:
            self._close()
            raise PolicyServerError(f"{self.url} did not greet as a simbridge policy server ({_reason(exc)}): {fix}") from None
        if hello.protocol != PROTOCOL:
            self._close()
            raise PolicyServerError(f"policy server {self.url} speaks {hello.protocol}, this client {PROTOCOL}: "
                                    "run the same simbridge version on both machines")  # fmt: skip
        if self.expected is not None:
            diff = contract_differences(hello.contract, self.expected.to_dict())
            if diff:
                self._close()
                raise PolicyServerError(f"policy server {self.url} serves {hello.policy_id} with another contract "
                                        f"than expected ({'; '.join(diff)}): serve a checkpoint for this setup")  # fmt: skip
        return hello

    def _fail(self, why: str) -> PolicyServerError:
        self._broken = why
        self._close()
        return PolicyServerError(f"{why}; no actions from it (fail closed)")

    def _close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):  # closing a dead socket: nothing left to do
                self._ws.close()
            self._ws = None

    def __repr__(self) -> str:
        return f"RemotePolicy({self.url}, id={getattr(self, 'hello', None) and self.policy_id}, chunk={getattr(self, 'chunk_size', '?')})"


def _reason(exc: BaseException) -> str:
    """A short cause: ``connection refused``, ``no close frame received or sent``, ``timed out``."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens there"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(getattr(exc, "strerror", None) or exc).strip()
    return text or type(exc).__name__
