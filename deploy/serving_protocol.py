"""The policy-server protocol: typed messages and their msgpack encoding (no torch).

``simbridge serve`` (:mod:`simbridge.training.serving`) runs a torch checkpoint behind a websocket;
:class:`simbridge.deploy.remote_policy.RemotePolicy` is its client. Both import these messages, so
the two sides cannot drift apart. The shape of it follows openpi's policy server and LeRobot's
async inference: one websocket per client, binary msgpack frames, numpy arrays inline.

Conversation (one connection = one client; requests are answered in order, one at a time)::

    server -> client   ServerHello    at connect: protocol, policy id, the PolicyContract, and a
                                      manifest-like description (family, chunk size, source
                                      checkpoint and its sha256, action normalization, device, dtype)
    client -> server   InferRequest   one contract observation: uint8 HWC RGB images per camera,
                                      ee_pose (7,), gripper_width, joint_positions (7,), the
                                      instruction, a request id and the observation's stamp
    server -> client   ActionChunk    the (k <= chunk_size, 7) float32 actions in physical units for
                                      that request id, the stamp echoed, the server's inference time
                   or  ErrorReply     the request id, ``kind`` ("contract": the observation does not
                                      match the contract; "server": inference failed) and a message

Frames: each message is a msgpack map with ``"type"`` (``hello`` | ``infer`` | ``actions`` |
``error``) and exactly its dataclass's fields. A numpy array is a map ``{"__ndarray__": True,
"dtype", "shape", "data"}`` with the raw C-order bytes (dtypes: bool, uint8, int32, int64,
float32, float64; never pickled objects). Websocket compression is off (images do not compress
well enough to pay for the CPU time); frames may be up to :data:`MAX_FRAME_BYTES`.

A message that does not decode, has an unknown type, lacks or adds a field, or carries a value of
the wrong type raises :class:`ProtocolError` (a :class:`~simbridge.data.spec.ContractError`).
Bump :data:`PROTOCOL` when a message changes; a client refuses a server speaking another version.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import msgpack
import numpy as np

from simbridge.data.spec import ContractError, Observation, PolicyContract

__all__ = [
    "MAX_FRAME_BYTES",
    "PROTOCOL",
    "ActionChunk",
    "ErrorReply",
    "InferRequest",
    "Message",
    "ProtocolError",
    "ServerHello",
    "decode",
    "encode",
]

PROTOCOL = "simbridge-policy/1"
#: Largest websocket frame either side accepts (four 1080p cameras fit).
MAX_FRAME_BYTES = 64 * 1024 * 1024
_DTYPES = frozenset({"bool", "uint8", "int32", "int64", "float32", "float64"})


class ProtocolError(ContractError):
    """A frame that is not a valid message of this protocol; the message names what is wrong."""


@dataclass(frozen=True)
class ServerHello:
    """Sent once by the server when a client connects."""

    TYPE: ClassVar[str] = "hello"
    protocol: str
    policy_id: str  # stable identity of the served weights ("ckpt-" + sha256 prefix of the checkpoint)
    contract: dict[str, Any]  # PolicyContract.to_dict()
    description: dict[str, Any]  # manifest-like: family, chunk_size, source, normalization, runtime

    def policy_contract(self) -> PolicyContract:
        try:
            return PolicyContract.from_dict(self.contract)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"the server's hello carries an invalid policy contract: {exc}") from None


@dataclass(frozen=True)
class InferRequest:
    """One observation to act on."""

    TYPE: ClassVar[str] = "infer"
    request_id: int
    stamp: float  # the observation's time (Observation.timestamp)
    instruction: str
    images: dict[str, np.ndarray]  # camera name -> uint8 (H, W, 3) RGB
    ee_pose: np.ndarray  # (7,) xyz + quaternion wxyz
    gripper_width: float
    joint_positions: np.ndarray  # (7,)

    @classmethod
    def from_observation(cls, obs: Observation, request_id: int) -> InferRequest:
        return cls(
            request_id=int(request_id), stamp=float(obs.timestamp), instruction=str(obs.instruction),
            images={k: np.ascontiguousarray(v) for k, v in obs.images.items()},
            ee_pose=np.asarray(obs.ee_pose, np.float64), gripper_width=float(obs.gripper_width),
            joint_positions=np.asarray(obs.joint_positions, np.float64),
        )  # fmt: skip

    def observation(self) -> Observation:
        return Observation(images=dict(self.images), ee_pose=self.ee_pose, gripper_width=self.gripper_width,
                           joint_positions=self.joint_positions, instruction=self.instruction,
                           timestamp=self.stamp)  # fmt: skip


@dataclass(frozen=True)
class ActionChunk:
    """The answer to an :class:`InferRequest`."""

    TYPE: ClassVar[str] = "actions"
    request_id: int
    stamp: float  # the request's observation stamp, echoed
    actions: np.ndarray  # (k <= chunk_size, 7) float32, physical units
    inference_s: float  # time the server spent on this request (model only)


@dataclass(frozen=True)
class ErrorReply:
    """A request the server could not answer; the connection stays open."""

    TYPE: ClassVar[str] = "error"
    request_id: int  # -1: not about one request
    kind: str  # "contract" | "server" | "protocol"
    message: str


Message = ServerHello | InferRequest | ActionChunk | ErrorReply
_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (ServerHello, InferRequest, ActionChunk, ErrorReply)}
#: The Python type every field must decode to (``ndarray``: see the module docstring).
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "protocol": str, "policy_id": str, "contract": dict, "description": dict, "request_id": int,
    "stamp": float, "instruction": str, "images": dict, "ee_pose": np.ndarray, "gripper_width": float,
    "joint_positions": np.ndarray, "actions": np.ndarray, "inference_s": float, "kind": str, "message": str,
}  # fmt: skip


# --- encoding -----------------------------------------------------------------------------------


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in _DTYPES:
            raise ProtocolError(f"cannot send a numpy array of dtype {obj.dtype}; allowed: {sorted(_DTYPES)}")
        arr = np.ascontiguousarray(obj)
        return {"__ndarray__": True, "dtype": arr.dtype.name, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _unpack_hook(obj: dict[str, Any]) -> Any:
    if obj.get("__ndarray__") is not True:
        return obj
    dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    if dtype not in _DTYPES or not isinstance(shape, list) or not isinstance(data, bytes):
        raise ProtocolError(f"malformed array (dtype {dtype!r}, shape {shape!r})")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ProtocolError(f"malformed array shape {shape!r}")
    if math.prod(shape) * np.dtype(dtype).itemsize != len(data):
        raise ProtocolError(f"array of dtype {dtype} and shape {shape} does not fit its {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def encode(message: Message) -> bytes:
    """One binary websocket frame."""
    payload = {"type": message.TYPE, **asdict(message)}
    return msgpack.packb(payload, default=_pack_default, use_bin_type=True)


def decode(frame: bytes | str, expect: tuple[type, ...] | None = None) -> Message:
    """The message in ``frame``; ``expect`` limits which message types are acceptable here."""
    if not isinstance(frame, bytes):
        raise ProtocolError("expected a binary msgpack frame, got a text frame")
    try:
        payload = msgpack.unpackb(frame, raw=False, object_hook=_unpack_hook, strict_map_key=True)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"frame is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise ProtocolError("frame is not a message (a map with a 'type')")
    kind = payload.pop("type")
    cls = _TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}; this side speaks {PROTOCOL}: {sorted(_TYPES)}")
    if expect is not None and cls not in expect:
        raise ProtocolError(f"unexpected {kind!r} message here; expected {[c.TYPE for c in expect]}")
    names = [f.name for f in fields(cls)]
    missing, extra = sorted(set(names) - set(payload)), sorted(set(payload) - set(names))
    if missing or extra:
        raise ProtocolError(f"{kind!r} message: missing fields {missing}, unknown fields {extra}")
    for name in names:
        payload[name] = _check_field(kind, name, payload[name])
    return cls(**payload)


def _check_field(kind: str, name: str, value: Any) -> Any:
    want = _FIELD_TYPES[name]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ProtocolError(f"{kind!r} message: field {name!r} must be {getattr(want, '__name__', want)}, "
                            f"got {type(value).__name__}")  # fmt: skip
    if name == "images" and not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in value.items()):
        raise ProtocolError(f"{kind!r} message: field 'images' must map camera names to arrays")
    return value
