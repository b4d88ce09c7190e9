"""``simbridge serve`` + RemotePolicy: a real checkpoint served by a real server process over loopback.

The checkpoint is the real model class at a micro size (written by save_checkpoint); the server is
``simbridge serve`` in a subprocess on a free port; nothing is mocked. In-process tests drive
:class:`PolicyServer.answer` directly for the refusals that a well-behaved client never sends.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from simbridge.data.spec import CameraSpec, ContractError, ObservationSpec, PolicyContract
from simbridge.deploy.bundle import hash_tree
from simbridge.deploy.export import ExportOptions, export_checkpoint, synthetic_observations
from simbridge.deploy.remote_policy import PolicyServerError, RemotePolicy, contract_differences
from simbridge.deploy.runtime import BundlePolicy
from simbridge.deploy.serving_protocol import (
    PROTOCOL,
    ActionChunk,
    ErrorReply,
    InferRequest,
    ProtocolError,
    ServerHello,
    decode,
    encode,
)

CONTRACT = PolicyContract(
    observation=ObservationSpec(cameras=(CameraSpec("scene", 40, 48), CameraSpec("wrist", 40, 48))), chunk_size=4
)
#: The real classes at a micro size (~0.2M parameters), as in test_export.py.
MICRO = dict(
    image_size=32,
    siglip_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                   "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                   "vision_use_head": False},
    text_config={"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                 "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256,
                 "tie_word_embeddings": False},
    value_head_dims=[32],
)  # fmt: skip


def start_server(checkpoint: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``simbridge serve`` on a free loopback port; returns the process and its ws:// address."""
    cmd = [sys.executable, "-m", "simbridge.data.cli", "serve", "--policy", str(checkpoint), "--port", "0",
           "--device", "cpu", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("simbridge serve: ckpt-") and " on ws://" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, line.rsplit(" on ", 1)[1].strip()
        seen.append(line)
        if not line:  # end of output: it exited
            break
    proc.kill()
    raise AssertionError(f"simbridge serve did not start (exit {proc.wait()}): {''.join(seen[-5:])}")


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[object, Path]:
    from simbridge.training.checkpoint import save_checkpoint
    from simbridge.training.models import build_policy

    policy = build_policy("openvla-oft", "tiny", contract=CONTRACT, seed=3, **MICRO)
    return policy, save_checkpoint(policy, tmp_path_factory.mktemp("serve") / "run", 5)


@pytest.fixture(scope="module")
def server(checkpoint) -> Iterator[str]:
    proc, url = start_server(checkpoint[1], "--dtype", "fp32")
    yield url
    stop(proc)


def test_handshake_carries_contract_and_description(server, checkpoint) -> None:
    remote = RemotePolicy(server)
    sha = hash_tree(checkpoint[1])
    assert remote.contract == CONTRACT and remote.chunk_size == 4
    assert remote.policy_id == f"ckpt-{sha[:16]}" and remote.hello.protocol == PROTOCOL
    d = remote.description
    assert (d["family"], d["chunk_size"]) == ("openvla-oft", 4)
    assert d["source"]["checkpoint_sha256"] == sha and d["source"]["iteration"] == 5
    assert d["action"]["normalization"]["q01"] == pytest.approx(checkpoint[0].action_stats.q01.tolist())
    assert d["runtime"] == {"device": "cpu", "dtype": "float32", "compiled": False, "torch": d["runtime"]["torch"]}
    remote.close()


def test_remote_actions_equal_local_greedy_and_the_bundle(server, checkpoint, tmp_path: Path) -> None:
    from simbridge.training.checkpoint import CheckpointPolicy

    remote, local = RemotePolicy(server), CheckpointPolicy(checkpoint[1])
    observations = synthetic_observations(CONTRACT, 5, seed=11)
    served = np.stack([remote.predict(o) for o in observations])
    assert served.shape == (5, 4, 7) and served.dtype == np.float32
    np.testing.assert_array_equal(served, local.predict_batch(observations))
    exported = export_checkpoint(checkpoint[1], tmp_path / "bundle", options=ExportOptions(parity_samples=2),
                                 progress=lambda _: None)  # fmt: skip
    tolerance = exported.manifest["parity"]["tolerance"]
    np.testing.assert_allclose(served, BundlePolicy(exported.bundle).predict_batch(observations), atol=tolerance)
    assert remote.last_round_trip_s >= remote.last_inference_s > 0
    remote.close()


def test_contract_mismatch_is_refused_in_one_line(server) -> None:
    other = PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("scene", 40, 48),)), chunk_size=4)
    with pytest.raises(PolicyServerError, match=r"serves ckpt-\w+ with another contract than expected "
                                                r"\(observation\.cameras: .*\): serve a checkpoint") as err:  # fmt: skip
        RemotePolicy(server, contract=other)
    assert "\n" not in str(err.value)
    assert RemotePolicy(server, contract=CONTRACT).contract == CONTRACT
    remote = RemotePolicy(server)
    wrong = synthetic_observations(CONTRACT, 1)[0]
    wrong.images["wrist"] = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ContractError, match="camera 'wrist': expected uint8 image of shape"):
        remote.predict(wrong)  # refused before it is sent
    assert remote.predict(synthetic_observations(CONTRACT, 1)[0]).shape == (4, 7)  # the connection is fine
    assert contract_differences({"a": {"b": 1}}, {"a": {"b": 2}}) == ["a.b: 1 != 2"]


def test_unreachable_server_names_the_address_and_the_fix() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PolicyServerError, match=rf"cannot reach the policy server at ws://127\.0\.0\.1:{port} "
                       rf"\(connection refused.*\): start it there with 'simbridge serve --policy <checkpoint> "
                       rf"--host 127\.0\.0\.1 --port {port}'"):  # fmt: skip
        RemotePolicy(f"ws://127.0.0.1:{port}", connect_timeout_s=2)
    with pytest.raises(PolicyServerError, match="is not ws://host:port"):
        RemotePolicy("http://127.0.0.1:8765")


def test_server_crash_mid_episode_fails_closed(checkpoint) -> None:
    proc, url = start_server(checkpoint[1])
    try:
        remote = RemotePolicy(url)
        obs = synthetic_observations(CONTRACT, 2, seed=4)
        assert remote.predict(obs[0]).shape == (4, 7)
        proc.kill()  # kill -9: no close frame
        proc.wait(timeout=10)
        with pytest.raises(PolicyServerError, match=rf"policy server {url} closed the connection during "
                                                    r"request 2 .*restart 'simbridge serve'.*fail closed"):  # fmt: skip
            remote.predict(obs[1])
        with pytest.raises(PolicyServerError, match=r"no actions until reset\(\) reconnects \(fail closed\)"):
            remote.predict(obs[1])  # every later call of the episode refuses too
        with pytest.raises(PolicyServerError, match="cannot reach the policy server"):
            remote.reset()  # a new episode reconnects: the server is still gone
    finally:
        if proc.poll() is None:
            stop(proc)


def test_load_policy_source_takes_a_server_url(server) -> None:
    from simbridge.training.evaluation import detect_policy_kind, load_policy_source

    assert detect_policy_kind("ws://127.0.0.1:1") == "remote"
    source = load_policy_source(server)
    assert source.kind == "remote" and source.contract == CONTRACT and source.name.startswith("remote:ckpt-")


# --- in process: the server's answers and the protocol's refusals ----------------------------------


def test_server_answers_and_refusals_in_process(checkpoint) -> None:
    from simbridge.training.serving import PolicyServer, ServedPolicy

    served = PolicyServer(ServedPolicy(checkpoint[1], device="cpu", dtype="bf16"))
    assert served.served.description["runtime"]["dtype"] == "bfloat16"
    obs = synthetic_observations(CONTRACT, 1, seed=2)[0]
    reply = decode(encode(served.answer(encode(InferRequest.from_observation(obs, 7)))))
    assert isinstance(reply, ActionChunk) and reply.request_id == 7 and reply.actions.shape == (4, 7)
    assert np.all(np.isfinite(reply.actions)) and reply.actions.dtype == np.float32
    obs.images["scene"] = obs.images["scene"][:, :10]
    bad = served.answer(encode(InferRequest.from_observation(obs, 8)))
    assert isinstance(bad, ErrorReply) and (bad.request_id, bad.kind) == (8, "contract")
    assert "camera 'scene'" in bad.message
    garbage = served.answer(b"\x93not msgpack")
    assert isinstance(garbage, ErrorReply) and garbage.kind == "protocol"


def test_protocol_round_trip_and_strict_decoding() -> None:
    obs = synthetic_observations(CONTRACT, 1, seed=1)[0]
    msg = decode(encode(InferRequest.from_observation(obs, 3)))
    assert isinstance(msg, InferRequest) and msg.request_id == 3 and msg.instruction == obs.instruction
    np.testing.assert_array_equal(msg.images["scene"], obs.images["scene"])
    assert msg.images["scene"].dtype == np.uint8 and msg.observation().validate(CONTRACT.observation)
    hello = ServerHello(protocol=PROTOCOL, policy_id="ckpt-1", contract=CONTRACT.to_dict(), description={})
    assert decode(encode(hello)).policy_contract() == CONTRACT
    import msgpack

    with pytest.raises(ProtocolError, match="unknown message type 'nope'"):
        decode(msgpack.packb({"type": "nope"}))
    with pytest.raises(ProtocolError, match=r"missing fields \['message'\], unknown fields \['extra'\]"):
        decode(msgpack.packb({"type": "error", "request_id": 1, "kind": "server", "extra": 1}))
    with pytest.raises(ProtocolError, match="field 'request_id' must be int, got str"):
        decode(msgpack.packb({"type": "error", "request_id": "1", "kind": "x", "message": ""}))
    with pytest.raises(ProtocolError, match="does not fit its 3 bytes"):
        decode(msgpack.packb({"type": "actions", "request_id": 1, "stamp": 0.0, "inference_s": 0.0,
                              "actions": {"__ndarray__": True, "dtype": "float32", "shape": [1], "data": b"abc"}}))
    with pytest.raises(ProtocolError, match="unexpected 'hello' message here"):
        decode(encode(hello), expect=(ActionChunk, ErrorReply))
    with pytest.raises(ProtocolError, match="cannot send a numpy array of dtype object"):
        encode(ErrorReply(1, "x", np.array([object()])))  # type: ignore[arg-type]


def test_the_client_needs_no_torch() -> None:
    code = "import sys, simbridge.deploy.remote_policy; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
