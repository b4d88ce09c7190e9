"""Benchmark: camera frame -> arm command latency and control-period jitter at 10 Hz in the twin.

The full deployment graph runs in one process over real DDS (loopback): twin node (franky-sim +
headless rendering of the scene camera), franka node (FrankyRobot + safety filter), policy node
(ONNX bundle, action chunks). For every action the franka node executed we take

* latency = (time franky had sent the command, from the franka node's trace) - (capture stamp of
  the oldest camera frame the action was computed from): the image's age when the arm got its
  command. Broken down per stage (:mod:`simbridge.deploy.latency`): capture -> received by the
  policy node -> observation assembled in a tick -> inference start / end -> published (later
  actions of a chunk wait in the queue here) -> received by the franka node -> executed;
* control period = interval between consecutive executed commands (target 100 ms) -> jitter;
* policy inference time (BundlePolicy.predict, measured around the call);
* CPU use of the process (all nodes, all threads) as a fraction of one core and of the machine.

    .venv/bin/python tests/benchmarks/bench_ros_latency.py [--bundle runs/export/sft/latest] [--seconds 20] \
        [--modes sync,async] [--slow 0.3]

Each inference mode of the policy node (``sync``: predict inside the control tick; ``async``: a
worker thread, :mod:`simbridge.deploy.async_inference`) is measured in the same run; ``--slow``
adds a fixed delay to every inference (a larger model). Per mode: frame -> command latency and its
breakdown (frame -> published by the policy node, published -> executed command seen), control-tick
period jitter and duration, ticks blocked by inference (> 50 ms), inference percentiles.

Without --bundle a micro OpenVLA-OFT bundle (untrained, 128x128 scene camera) is exported first.
Prints JSON and writes tests/benchmarks/results/ros_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ros2_ws" / "src" / "simbridge_ros"))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))


def micro_bundle(root: Path) -> Path:
    from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
    from simbridge.deploy.export import ExportOptions, export_checkpoint
    from simbridge.training.checkpoint import save_checkpoint
    from simbridge.training.models import ActionStats, build_policy

    micro = dict(
        image_size=32,
        siglip_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                       "vision_use_head": False},
        text_config={"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256,
                     "tie_word_embeddings": False},
        value_head_dims=[32],
    )
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.normal(0.0, 0.005, (400, 6)), rng.choice([-1.0, 1.0], (400, 1))], axis=1)
    stats = ActionStats.from_actions(actions, rng.normal(0.3, 0.1, (400, 8)))
    contract = PolicyContract(observation=ObservationSpec((CameraSpec("scene", 128, 128),)), chunk_size=4)
    policy = build_policy("openvla-oft", "tiny", contract=contract, action_stats=stats, seed=0, **micro)
    checkpoint = save_checkpoint(policy, root / "run", 1, metrics={})
    out = root / "bundle"
    export_checkpoint(checkpoint, out, options=ExportOptions(parity_samples=2), progress=lambda _m: None)
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "mean_ms": round(float(a.mean()), 2), "max_ms": round(float(a.max()), 2), "n": len(values)}


def run_graph(bundle: Path, inference: str, seconds: float, slow_s: float) -> dict:
    """One measurement: twin + franka + policy nodes with ``inference`` (sync | async)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState
    from simbridge_ros.common import EXECUTED_ACTION_TOPIC, msg_to_action
    from simbridge_ros.franka import FrankaNode
    from simbridge_ros.policy import PolicyNode
    from simbridge_ros.twin import TwinNode

    from simbridge.deploy.latency import stage_durations
    from simbridge.deploy.runtime import BundlePolicy
    from simbridge.deploy.twin import TwinSim

    policy_impl = BundlePolicy(bundle)
    if slow_s > 0:  # a larger model: the bundle, slowed
        real_predict = policy_impl.predict
        policy_impl.predict = lambda obs: (time.sleep(slow_s), real_predict(obs))[1]
    context = Context()
    rclpy.init(context=context)
    samples: list[tuple[float, float, float]] = []  # (receive wall time, observation-based stamp, published)
    cameras = policy_impl.contract.observation.cameras  # the twin renders what the bundle reads
    with TwinSim(seed=0, camera_size=(cameras[0].height, cameras[0].width)) as twin:
        twin_node = TwinNode(twin, context=context, parameter_overrides=[
            Parameter("camera_rate_hz", value=10.0), Parameter("cameras", value=[c.name for c in cameras])])
        franka = FrankaNode(context=context, parameter_overrides=[
            Parameter("robot_ip", value=twin.hostname), Parameter("sim", value=True)])
        policy = PolicyNode(policy_impl, context=context, parameter_overrides=[
            Parameter("instruction", value="put the red cube on the plate"), Parameter("control_rate_hz", value=10.0),
            Parameter("inference", value=inference), Parameter("max_observation_age_s", value=1.0)])
        probe = rclpy.create_node("bench_probe", context=context)

        def on_executed(m) -> None:
            cmd = msg_to_action(m)
            samples.append((time.time(), cmd.stamp, cmd.published or cmd.stamp))

        probe.create_subscription(JointState, EXECUTED_ACTION_TOPIC, on_executed, 50)
        nodes = [twin_node, franka, policy, probe]
        executor = MultiThreadedExecutor(num_threads=6, context=context)
        for n in nodes:
            executor.add_node(n)
        stop = threading.Event()
        spinner = threading.Thread(target=lambda: [executor.spin_once(0.05) for _ in iter(stop.is_set, True)])
        spinner.start()
        deadline = time.monotonic() + 60
        while not samples and time.monotonic() < deadline:  # camera verification + first action
            time.sleep(0.05)
        if not samples:
            raise SystemExit(f"no executed action within 60 s; policy status: {policy.status_text} {policy.refusal}")
        samples.clear()
        policy.ticks.clear()
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        taken = list(samples)
        ticks = list(policy.ticks)
        stop.set()
        spinner.join()
        for n in nodes:
            executor.remove_node(n)
        for n in (twin_node, franka, policy):
            n.close()
        for n in nodes:
            n.destroy_node()
        executor.shutdown()
    context.try_shutdown()

    # Join the policy node's timing of each command with the franka node's (by publish time).
    executed = {published: (received, done) for published, received, done in franka.trace}
    first = taken[0][2]
    timings = [t.with_franka(*executed[t.published]) for t in policy.trace
               if t.published in executed and t.published >= first]
    stages = stage_durations(timings)
    infer = list({t.inference_start: t.inference_end - t.inference_start for t in timings}.values())  # per chunk
    periods = np.diff([recv for recv, _, _ in taken])
    tick_periods = np.diff([t for t, _ in ticks])
    frame_to_command = percentiles(stages["frame_to_first_command"])
    inference_p99 = percentiles(infer)["p99_ms"] if infer else 0.0
    return {
        "inference_mode": inference,
        "inference_slowed_by_s": slow_s,
        "seconds": round(wall, 1),
        "frame_to_command_latency": frame_to_command,  # first action of each chunk: the pipeline
        "frame_to_command_all_actions": percentiles(stages["frame_to_executed"]),  # later chunk actions: by plan
        "breakdown": {name: percentiles(v) for name, v in stages.items()
                      if v and name not in ("frame_to_executed", "frame_to_first_command")},
        "target_frame_to_command_p99_ms": round(50.0 + inference_p99, 2),  # 50 ms + the policy's own p99
        "meets_latency_target": frame_to_command["p99_ms"] <= 50.0 + inference_p99,
        "executed_command_period": {**percentiles(list(periods)),
                                    "jitter_std_ms": round(float(np.std(periods) * 1000), 2)},
        "control_tick": {"period_jitter_std_ms": round(float(np.std(tick_periods) * 1000), 2),
                         "duration_p99_ms": round(float(np.percentile([d for _, d in ticks], 99) * 1000), 2),
                         "blocked_by_inference": int(sum(d > 0.05 for _, d in ticks)), "ticks": len(ticks)},
        "policy_inference": percentiles(infer) if infer else None,
        "commands_per_s": round(len(taken) / wall, 2),
        "cpu_cores_used": round(cpu / wall, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--slow", type=float, default=0.0, help="add this many seconds to every inference")
    parser.add_argument("--modes", default="sync,async", help="inference modes to compare, in one run")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "benchmarks" / "results" / "ros_latency.json")
    args = parser.parse_args()
    bundle = args.bundle or micro_bundle(Path(tempfile.mkdtemp(prefix="bench-ros-")))
    runs = [run_graph(bundle, mode, args.seconds, args.slow) for mode in args.modes.split(",")]
    result = {
        "benchmark": "ros_latency",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setup": "twin (franky-sim, the bundle's cameras at 10 Hz) + franka + policy nodes, one process, DDS loopback",
        "bundle": str(bundle),
        "control_rate_hz": 10.0,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
