"""evaluation orchestrator node: runs a hardware (or twin) evaluation protocol end to end.

For every trial of the randomized, blinded schedule (:mod:`simbridge_ros.protocol`):

1. reset: the arm goes home (``/franka/home``; in the twin a robot fault is recovered with
   ``/franka/recover`` and homing retried, on the robot a failed homing stops the protocol for
   the operator); in the twin the condition's scene changes
   (``twin:`` fields of the condition: light, tablecloth, distractors, ...) are applied and the
   objects laid out anew (``/twin/reset``, whose layout also gives the instruction); on the robot
   the operator is shown the condition's setup (prompt mode waits for Enter);
2. the policy node gets the trial's bundle and instruction (parameters), the logger gets the
   episode metadata; the franka node's commander lock is released; recording starts;
3. the policy runs until ``episode_time_s`` passes, the twin reports success (twin mode), or the
   operator ends it (``~/end_episode``);
4. the policy is disabled, the arm stopped, the episode committed to the store and labelled:
   by the twin's object poses (``label: twin``), by a ``~/label`` std_srvs/SetBool call
   (``label: service``) or at a terminal prompt (``label: prompt``).

The operator only ever sees blinded ids (A, B, ...). Results go to ``<log_dir>/episodes.jsonl``
(the same keys as the simulation evaluation harness, so ``simbridge report`` reads both),
``summary.json`` and ``blinding.json``, written as the trials run (nothing lost on a crash).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from simbridge_ros.common import (
    EVAL_STATUS_TOPIC,
    FRANKA_STATUS_TOPIC,
    LATCHED,
    TWIN_SUCCESS_TOPIC,
    expand,
    json_msg,
    run_node,
)
from simbridge_ros.protocol import ProtocolConfig, Trial, load_protocol, make_schedule


def _param(name: str, value: Any) -> ParameterMsg:
    if isinstance(value, bool):
        v = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    elif isinstance(value, int):
        v = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    elif isinstance(value, float):
        v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    else:
        v = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(value))
    return ParameterMsg(name=name, value=v)


class EvalError(RuntimeError):
    """A step of the protocol failed (a node is missing, a service refused)."""


class OrchestratorNode(Node):
    #: spin_nodes gives this node a multi-threaded executor (callbacks in their own groups).
    concurrent_callbacks = True

    def __init__(self, protocol: ProtocolConfig | None = None, *, name: str = "orchestrator",
                 prompt: Callable[[str], str] = input, autostart: bool | None = None, **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        self.declare_parameter("protocol", "")
        # key=value overrides of the protocol file, e.g. ["policies.sft=runs/export/sft/latest", "episode_time_s=20.0"]
        self.declare_parameter("protocol_overrides", [""])
        self.declare_parameter("log_dir", "runs/hardware_eval")
        self.declare_parameter("label", "")  # overrides the protocol's label mode
        self.declare_parameter("autostart", True)
        self.declare_parameter("service_timeout_s", 30.0)
        # How long to wait at start for the other nodes' services (the franka node may still be
        # connecting, a policy loading); what is still missing is logged while waiting.
        self.declare_parameter("startup_timeout_s", 120.0)
        if protocol is None:
            path = self.get_parameter("protocol").value
            if not path:
                raise EvalError("no protocol: set the 'protocol' parameter to a launch/protocols/*.yaml file")
            overrides = [o for o in self.get_parameter("protocol_overrides").value if o]
            protocol = load_protocol(path, overrides)
        self.protocol = protocol
        self.label_mode = self.get_parameter("label").value or protocol.label
        self.schedule = make_schedule(protocol)
        self.log_dir = expand(self.get_parameter("log_dir").value)
        self.prompt = prompt
        self.twin_success = False
        self.results: list[dict] = []
        self.done = threading.Event()
        self.error = ""
        self._end_episode = threading.Event()
        self._label_value: bool | None = None
        self._label_event = threading.Event()

        group = ReentrantCallbackGroup()  # service calls are awaited from the worker thread
        self.clients_ = {
            "home": self.create_client(Trigger, "/franka/home", callback_group=group),
            "recover": self.create_client(Trigger, "/franka/recover", callback_group=group),
            "release": self.create_client(Trigger, "/franka/release_commander", callback_group=group),
            "twin_reset": self.create_client(Trigger, "/twin/reset", callback_group=group),
            "twin_params": self.create_client(SetParameters, "/twin/set_parameters", callback_group=group),
            "policy_reset": self.create_client(Trigger, "/policy/reset", callback_group=group),
            "policy_params": self.create_client(SetParameters, "/policy/set_parameters", callback_group=group),
            "logger_params": self.create_client(SetParameters, "/logger/set_parameters", callback_group=group),
            "log_start": self.create_client(Trigger, "/logger/start", callback_group=group),
            "log_stop": self.create_client(Trigger, "/logger/stop", callback_group=group),
            "log_label": self.create_client(SetBool, "/logger/label", callback_group=group),
        }
        self.create_subscription(Bool, TWIN_SUCCESS_TOPIC, self._on_twin_success, LATCHED, callback_group=group)
        self.robot_fault = ""  # the franka node's fault text; a fault during a trial is recorded with it
        self.create_subscription(String, FRANKA_STATUS_TOPIC, self._on_franka_status, LATCHED, callback_group=group)
        self.pub_status = self.create_publisher(String, EVAL_STATUS_TOPIC, LATCHED)
        self.create_service(Trigger, "~/end_episode", self._on_end_episode, callback_group=group)
        self.create_service(SetBool, "~/label", self._on_label, callback_group=group)
        self._worker = threading.Thread(target=self._run_safely, name="orchestrator", daemon=True)
        if self.get_parameter("autostart").value if autostart is None else autostart:
            self._worker.start()

    def start(self) -> None:
        self._worker.start()

    # --- plumbing --------------------------------------------------------------------------------
    def _call(self, key: str, request: Any, extra_timeout_s: float = 0.0) -> Any:
        client = self.clients_[key]
        timeout = float(self.get_parameter("service_timeout_s").value) + extra_timeout_s
        if not client.wait_for_service(timeout_sec=timeout):
            raise EvalError(f"service {client.srv_name} is not available after {timeout:.0f} s; is that node running?")
        event = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _f: event.set())
        if not event.wait(timeout):
            raise EvalError(f"service {client.srv_name} did not answer within {timeout:.0f} s")
        return future.result()

    def _trigger(self, key: str, required: bool = True, extra_timeout_s: float = 0.0) -> Trigger.Response:
        response = self._call(key, Trigger.Request(), extra_timeout_s)
        if required and not response.success:
            raise EvalError(f"{self.clients_[key].srv_name} refused: {response.message}")
        return response

    def _set_params(self, key: str, **values: Any) -> None:
        response = self._call(key, SetParameters.Request(parameters=[_param(k, v) for k, v in values.items()]))
        bad = [f"{k}: {r.reason}" for k, r in zip(values, response.results, strict=True) if not r.successful]
        if bad:
            raise EvalError(f"{self.clients_[key].srv_name} refused parameters: {bad}")

    def _status(self, **fields: Any) -> None:
        self.pub_status.publish(json_msg(**fields))
        self.get_logger().info(" ".join(f"{k}={v}" for k, v in fields.items()))

    # --- the protocol ----------------------------------------------------------------------------
    def _run_safely(self) -> None:
        try:
            self.run_protocol()
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"
            if not self.context.ok():  # Ctrl-C / the launch stopping us mid-call: a normal stop, not an abort
                return
            try:
                self.get_logger().error(f"evaluation aborted: {self.error}; results so far are in {self.log_dir}")
                self._status(state="aborted", error=self.error)
            except Exception:
                if self.context.ok():  # not the shutdown race (the context went down meanwhile)
                    raise
        finally:
            self.done.set()

    def wait_for_nodes(self) -> None:
        """Wait until every service the protocol calls is up, saying which ones are still missing."""
        needed = [k for k in self.clients_ if self.label_mode == "twin" or not k.startswith("twin")]
        timeout = float(self.get_parameter("startup_timeout_s").value)
        deadline, next_report = time.monotonic() + timeout, time.monotonic() + 5.0
        while True:
            missing = [self.clients_[k].srv_name for k in needed if not self.clients_[k].service_is_ready()]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise EvalError(f"services {missing} not available after {timeout:.0f} s: are those nodes "
                                "running (same ROS_DOMAIN_ID)? Their own log says why they did not start")
            if time.monotonic() > next_report:
                self.get_logger().info(f"waiting for {missing}")
                next_report = time.monotonic() + 5.0
            time.sleep(0.1)

    def run_protocol(self) -> list[dict]:
        self.wait_for_nodes()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / "blinding.json").write_text(json.dumps(self.schedule.blinding, indent=1))
        n = len(self.schedule.trials)
        for trial in self.schedule.trials:
            self._status(state="trial", trial=f"{trial.index + 1}/{n}", condition=trial.condition.name,
                         policy=trial.blind_id)
            self.results.append(self.run_trial(trial))
            with (self.log_dir / "episodes.jsonl").open("a") as f:
                f.write(json.dumps(self.results[-1]) + "\n")
        self._write_summary()
        self._status(state="finished", episodes=n, log_dir=str(self.log_dir))
        return self.results

    def run_trial(self, trial: Trial) -> dict:
        twin = self.label_mode == "twin"
        log = self.get_logger()
        self._trigger("release")
        self._home_arm()
        instruction = trial.instruction
        if twin:  # the condition becomes the twin's scene; the layout says what to ask for
            log.info(f"twin scene for {trial.condition.name}: {trial.condition.twin or 'base'}")
            self._set_params("twin_params", scene_overrides_json=json.dumps(trial.condition.twin))
            layout = json.loads(self._trigger("twin_reset").message)
            instruction = trial.condition.instruction or layout.get("instruction") or trial.instruction
        elif trial.condition.setup and self.label_mode == "prompt":
            self.prompt(f"[{trial.condition.name}] {trial.condition.setup}\nPress Enter when ready (policy {trial.blind_id}) ")
        log.info(f"loading policy {trial.blind_id}: {instruction!r}")
        self._set_params("policy_params", enabled=False, bundle=trial.bundle, instruction=instruction)
        self._trigger("policy_reset")
        self._set_params(
            "logger_params", instruction=instruction, policy_id=trial.policy, condition=trial.condition.name,
            seed=trial.seed, task=self.protocol.name,
            extra_json=json.dumps({"blind_id": trial.blind_id, "bundle": trial.bundle,
                                   "category": trial.condition.category, "protocol": self.protocol.name}),
        )
        self._trigger("log_start")
        log.info(f"episode running (up to {self.protocol.episode_time_s:g} s)")
        self.twin_success = False
        fault_during_trial = ""
        self._end_episode.clear()
        self._set_params("policy_params", enabled=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.protocol.episode_time_s and not self._end_episode.is_set():
            if twin and self.twin_success:
                break
            fault_during_trial = fault_during_trial or self.robot_fault
            time.sleep(0.05)
        duration = time.monotonic() - t0
        self._set_params("policy_params", enabled=False)
        self._trigger("release")
        stopped = self._trigger("log_stop", required=False)
        info = json.loads(stopped.message) if stopped.success else {"episode": None, "steps": 0}
        success = self._decide_success(trial)
        if info["episode"] is not None:
            by = "env" if twin else f"operator:{self.label_mode}"
            self._set_params("logger_params", label_by=by)
            self._call("log_label", SetBool.Request(data=success))
        return {
            "policy": trial.policy, "blind_id": trial.blind_id, "split": trial.condition.name,
            "category": trial.condition.category, "seed": trial.seed, "episode": trial.index,
            "success": success, "steps": info["steps"], "instruction": instruction,
            "duration_s": round(duration, 2), "store_episode": info["episode"],
            "robot_fault": fault_during_trial or self.robot_fault,
        }

    def _home_arm(self, attempts: int = 3) -> None:
        """Home the arm before a trial. A faulted twin is recovered and homing retried; on the robot a
        failed homing stops the protocol: a person checks the arm before it moves again."""
        log = self.get_logger()
        for attempt in range(1, attempts + 1):
            log.info("homing the arm")
            # A blocking motion: settling (3 s), the arm (30 s) and the gripper (10 s).
            response = self._trigger("home", required=False, extra_timeout_s=45.0)
            if response.success or "has no home()" in response.message:
                return
            if "e-stop" in response.message or self.label_mode != "twin" or attempt == attempts:
                raise EvalError(
                    f"homing failed: {response.message}. Fix: check the arm, release the e-stop / call "
                    f"/franka/recover, then run the protocol again (finished trials are kept in {self.log_dir})"
                )
            log.warning(f"homing failed ({response.message}); recovering the twin and retrying")
            self._trigger("recover")

    def _decide_success(self, trial: Trial) -> bool:
        if self.label_mode == "twin":
            return bool(self.twin_success)
        if self.label_mode == "service":
            self._status(state="awaiting_label", policy=trial.blind_id, condition=trial.condition.name,
                         how=f"ros2 service call {self.get_fully_qualified_name()}/label std_srvs/srv/SetBool '{{data: true}}'")
            self._label_event.clear()
            self._label_event.wait()
            return bool(self._label_value)
        while True:
            answer = self.prompt(f"Episode with policy {trial.blind_id} ({trial.condition.name}): success? [y/n] ")
            if answer.strip().lower() in ("y", "yes", "n", "no"):
                return answer.strip().lower().startswith("y")

    def _write_summary(self) -> None:
        from simbridge.data.stats import wilson_interval

        summary: dict[str, dict] = {}
        for r in self.results:
            key = f"{r['policy']}/{r['split']}"
            s = summary.setdefault(key, {"policy": r["policy"], "split": r["split"], "category": r["category"],
                                         "episodes": 0, "successes": 0})
            s["episodes"] += 1
            s["successes"] += int(r["success"])
        for s in summary.values():
            s["success_rate"] = s["successes"] / s["episodes"]
            s["wilson95"] = list(wilson_interval(s["successes"], s["episodes"]))
        (self.log_dir / "summary.json").write_text(json.dumps(
            {"protocol": self.protocol.name, "blinding": self.schedule.blinding, "splits": list(summary.values())},
            indent=1))

    # --- callbacks -------------------------------------------------------------------------------
    def _on_franka_status(self, msg: String) -> None:
        with contextlib.suppress(ValueError):  # a malformed status leaves the last known fault
            self.robot_fault = str(json.loads(msg.data).get("fault") or "")

    def _on_twin_success(self, msg: Bool) -> None:
        self.twin_success = self.twin_success or bool(msg.data)

    def _on_end_episode(self, request, response):
        self._end_episode.set()
        response.success, response.message = True, "ending the episode"
        return response

    def _on_label(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self._label_value = bool(request.data)
        self._label_event.set()
        response.success, response.message = True, f"labelled success={request.data}"
        return response


def main(args=None) -> None:
    run_node(OrchestratorNode, args, finished=lambda node: node.done.is_set(),
             exit_code=lambda node: 1 if node.error else 0)


if __name__ == "__main__":
    main()
