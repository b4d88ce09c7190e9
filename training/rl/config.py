"""Configuration of an RL run (PPO / GRPO): one validated dataclass tree, loaded from YAML.

The tree mirrors RLinf's config groups without its sprawl::

    cluster:   where the workers run (local Ray instance or an existing cluster, placement mode)
    env:       what one environment is (env.spec: a SimEnvSpec), how many, how they are split
               into workers and stages
    policy:    which model (the VLA families, or the toy policy) and its warm start
    algorithm: name ("ppo" | "grpo") and its hyper-parameters
    reward:    sparse success + optional dense shaping
    runner:    iterations, rollout length, checkpoints, resume

Load with ``load_config(RLConfig, "launch/configs/ppo_maniskill.yaml", overrides=[...])``.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from simbridge.data.config import config
from simbridge.deploy.chunking import ChunkingConfig
from simbridge.training.envs.spec import SimEnvSpec
from simbridge.training.models.adapters import LoRAOptions
from simbridge.training.renamed_keys import renamed_keys

PlacementMode = Literal["collocated", "disaggregated", "hybrid"]


@config
class ClusterConfig:
    #: ``None``: start a private local Ray instance; ``"auto"`` or ``"<head-ip>:6379"``: join a
    #: cluster started with ``ray start --head`` (see ``simbridge.training.rl.runner``).
    address: str | None = None
    #: CPUs given to the local Ray instance (ignored when joining a cluster). ``0``: all cores.
    num_cpus: int = 2
    #: GPUs given to the local Ray instance. ``None``: the GPUs torch sees; when there are any and
    #: no ``*.gpus_per_worker`` is set, the rollout and the actor use them (logged at start).
    #: ``0``: train on the CPU.
    num_gpus: int | None = None
    #: Memory of one GPU in GB for ``--plan`` (None: torch.cuda's, when a GPU is present).
    gpu_memory_gb: float | None = None
    #: collocated: every worker group shares the same bundle(s) and the rollout is run phase by
    #: phase (env, then inference); disaggregated: every group has its own bundle(s), pipelined;
    #: hybrid: env and rollout on separate bundles (pipelined), the actor takes them all to update.
    placement: PlacementMode = "hybrid"
    #: Ray placement-group strategy across nodes.
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    #: How many times Ray restarts a crashed env worker before the run fails.
    env_max_restarts: int = 3

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or (self.num_gpus or 0) < 0:
            raise ValueError("num_cpus/num_gpus: must be >= 0")
        if self.env_max_restarts < 0:
            raise ValueError("env_max_restarts: must be >= 0")


#: Keys of ``env`` that moved into ``env.spec`` (SimEnvSpec); old files and overrides still load.
_SPEC_KEYS = ("task", "split", "obs_mode", "camera_size", "wrist_camera", "max_episode_steps")


@config
class EnvConfig:
    #: "toy": the in-package ToyReach task (simbridge.training.rl.toy, instant, for tests);
    #: "sim": the simulation tasks of simbridge.training.envs (ManiSkill3 / LIBERO).
    backend: Literal["toy", "sim"] = "sim"
    #: What one environment is: task, split, observation mode, cameras, episode length. A warm
    #: start renders the cameras of its checkpoint. The toy backend reads the split and the length.
    spec: SimEnvSpec = field(default_factory=SimEnvSpec)
    num_workers: int = 1
    envs_per_worker: int = 4
    #: Each env worker splits its envs into this many stages; the simulator steps stage k while
    #: the rollout worker infers on stage k+1 (RLinf's fine-grained pipelining).
    pipeline_stage_num: int = 2
    cpus_per_worker: float = 1.0
    #: GPUs of each env worker (its range: Ray sets CUDA_VISIBLE_DEVICES); for ManiSkill's GPU
    #: simulation (``kwargs.sim_backend: physx_cuda``).
    gpus_per_worker: float = 0.0
    #: How a ManiSkill env worker holds its envs. "auto": one batched scene per pipeline stage on
    #: the GPU backend (``kwargs.sim_backend: physx_cuda``), one scene per env on the CPU.
    #: "batched": batched scenes on any backend (ManiSkill's CPU backend allows one env per scene).
    #: "single": one scene per env.
    scene_batching: Literal["auto", "batched", "single"] = "auto"
    seed: int = 0
    #: 0: every episode starts from a new initial state (seeds seed, seed+1, ...). N > 0: episodes
    #: cycle through the N fixed initial states of seeds seed..seed+N-1, as LIBERO's benchmarks
    #: train and evaluate on 50 fixed initial states per task (evaluate: ``--seed seed --episodes N``).
    num_initial_states: int = 0
    #: Extra keyword arguments for the env factory (e.g. the toy task's ``step_cost_s``).
    kwargs: dict[str, float | int | str | bool] = field(default_factory=dict)

    _renamed = renamed_keys({k: f"spec.{k}" for k in _SPEC_KEYS}, where="env.")

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.envs_per_worker < 1:
            raise ValueError("num_workers/envs_per_worker: must be >= 1")
        if self.pipeline_stage_num < 1 or self.envs_per_worker % self.pipeline_stage_num:
            raise ValueError(
                f"pipeline_stage_num: must be >= 1 and divide envs_per_worker ({self.envs_per_worker}), "
                f"got {self.pipeline_stage_num}"
            )
        if self.cpus_per_worker <= 0:
            raise ValueError("cpus_per_worker: must be > 0")
        if self.gpus_per_worker < 0:
            raise ValueError("gpus_per_worker: must be >= 0")
        if self.num_initial_states < 0:
            raise ValueError("num_initial_states: 0 (a new initial state every episode) or a positive count")
        if self.spec.chunking != ChunkingConfig():
            raise ValueError("spec: RL executes every predicted chunk whole (one policy call per chunk); "
                             "leave env.spec.chunking at its default")  # fmt: skip

    @property
    def max_episode_steps(self) -> int:
        """``spec.max_episode_steps``, where the rollout reads it."""
        return self.spec.max_episode_steps

    @property
    def num_envs(self) -> int:
        return self.num_workers * self.envs_per_worker


@config
class PolicyConfig:
    #: "vla": simbridge.training.models (build_policy / load_checkpoint); "toy": ToyPolicy.
    backend: Literal["vla", "toy"] = "vla"
    family: str = "openvla-oft"
    preset: str = "tiny"
    #: Warm start: a checkpoint directory (e.g. an SFT run's checkpoints/iter_000100).
    init_checkpoint: str | None = None
    #: Sampling temperature during rollouts (RLinf: 1.0 in training).
    temperature: float = 1.0
    #: Backend-specific keyword arguments (the toy policy's ``hidden``, ``bins``...). VLA: config
    #: overrides of a fresh model, and LoRA on a fresh or an ``init_checkpoint`` model: ``lora_rank``,
    #: ``lora_alpha``, ``lora_dropout``, ``lora_targets`` ("q_proj,v_proj") and ``lora_trainable``
    #: (modules training next to the adapters; default "value_head,action_queries,regression_head").
    kwargs: dict[str, float | int | str | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError("temperature: must be > 0")
        try:
            LoRAOptions.from_kwargs(self.kwargs)
        except ValueError as exc:
            raise ValueError(f"kwargs: {exc}") from None


@config
class RolloutConfig:
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.num_workers != 1:
            raise ValueError("num_workers: only 1 rollout worker is supported in this version")
        if self.cpus_per_worker <= 0:
            raise ValueError("cpus_per_worker: must be > 0")
        if self.gpus_per_worker < 0:
            raise ValueError("gpus_per_worker: must be >= 0")


@config
class ActorConfig:
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    lr: float = 1e-4
    #: Learning rate of the value head (``ppo.is_critic_parameter``); RLinf: 3e-3.
    value_lr: float = 3e-3
    max_grad_norm: float = 1.0
    minibatch_size: int = 64
    update_epochs: int = 1
    #: "bf16": autocast to bfloat16 in the update (weights, gradients and Adam state stay float32).
    precision: Literal["fp32", "bf16"] = "fp32"
    #: Recompute the LM's and the vision towers' activations in the backward pass (less memory).
    gradient_checkpointing: bool = False
    #: Processes of the actor worker group (one GPU each with gpus_per_worker >= 1). Each takes
    #: 1/num_workers of every minibatch; the update is the one of a single process.
    num_workers: int = 1
    #: How the actor processes hold the policy (simbridge.training.rl.distributed): "none" (one
    #: process), "ddp" (a full copy each, gradients all-reduced), "fsdp2" (torch's fully_shard:
    #: parameters, gradients and Adam state split across the processes).
    parallel: Literal["none", "ddp", "fsdp2"] = "none"
    #: Samples per forward/backward in one process (gradient accumulation): each minibatch is split
    #: over the processes, then into micro-batches of at most this size, so minibatch_size does not
    #: depend on GPU memory. None: one micro-batch per process.
    micro_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.value_lr <= 0:
            raise ValueError("lr/value_lr: must be > 0")
        if self.minibatch_size < 1 or self.update_epochs < 1:
            raise ValueError("minibatch_size/update_epochs: must be >= 1")
        if self.num_workers < 1:
            raise ValueError("num_workers: must be >= 1")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError("micro_batch_size: must be >= 1 (or null: one micro-batch per process)")
        if self.num_workers > 1 and self.parallel == "none":
            raise ValueError(f"parallel: 'none' trains in one process; set actor.parallel=ddp or fsdp2 for "
                             f"actor.num_workers={self.num_workers}, or actor.num_workers=1")  # fmt: skip
        if self.num_workers > 1 and self.gpus_per_worker > 0 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ValueError(f"gpus_per_worker: {self.gpus_per_worker:g} is a fraction of a GPU; with "
                             f"actor.num_workers={self.num_workers} every actor process needs whole GPUs of its "
                             "own (NCCL refuses two processes on one GPU): set 1")  # fmt: skip


@config
class AlgorithmConfig:
    #: A key of ``simbridge.training.rl.algorithms.ALGORITHMS`` ("ppo", "grpo", ...).
    name: str = "ppo"
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_low: float = 0.2
    #: PPO uses a symmetric clip (clip_high = clip_low when None); GRPO defaults to 0.28.
    clip_high: float | None = None
    value_clip: float = 0.2
    huber_delta: float = 10.0
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    normalize_advantages: bool = True
    #: GRPO: number of environments that share one initial state.
    group_size: int = 8
    #: GRPO: drop groups whose episode rewards are all equal (no learning signal).
    filter_equal_groups: bool = True
    #: PPO: the first N updates train the value head only (verl's ``critic_warmup``). A warm
    #: start has a random critic; its advantages are noise that would move the SFT policy at random.
    critic_warmup_iterations: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ValueError("gamma/gae_lambda: gamma in (0, 1], lambda in [0, 1]")
        if self.clip_low <= 0 or (self.clip_high is not None and self.clip_high <= 0):
            raise ValueError("clip_low/clip_high: must be > 0")
        if self.group_size < 2:
            raise ValueError("group_size: must be >= 2")
        if self.critic_warmup_iterations < 0:
            raise ValueError("critic_warmup_iterations: must be >= 0")
        if self.critic_warmup_iterations and self.name == "grpo":
            raise ValueError("critic_warmup_iterations: GRPO has no critic; leave it at 0")

    @property
    def clip_upper(self) -> float:
        if self.clip_high is not None:
            return self.clip_high
        return 0.28 if self.name == "grpo" else self.clip_low


@config
class RewardConfig:
    #: Scale of the env's sparse success reward (1.0 on the success step).
    success: float = 1.0
    #: Weight of the task's dense shaping term ``info["dense_reward"]`` (0: sparse only).
    dense_coef: float = 0.0


@config
class RunnerConfig:
    name: str = "ppo"
    root: str = "runs"
    iterations: int = 100
    #: Policy calls per env per iteration (PPO). GRPO runs one full episode per env instead.
    rollout_steps: int = 32
    checkpoint_every: int = 10
    #: Keep only the newest N checkpoints plus the one with the best training success rate
    #: (0: keep all). A 7B checkpoint is ~15 GB.
    keep_checkpoints: int = 0
    #: A run directory to continue from its latest checkpoint ("" / None: start fresh).
    resume: str | None = None
    seed: int = 0
    progress: bool = True
    #: Wall-clock budget of one ``train`` call in minutes, Ray start-up included (None: no limit).
    #: The run stops with a checkpoint before an iteration that would overrun it (e.g. a cluster
    #: time slot); ``runner.resume`` continues it later.
    time_budget_min: float | None = None

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.rollout_steps < 1:
            raise ValueError("iterations/rollout_steps: must be >= 1")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            raise ValueError("time_budget_min: must be > 0 minutes (or null: no limit)")
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every: must be >= 1")
        if self.keep_checkpoints < 0:
            raise ValueError("keep_checkpoints: 0 (keep all) or how many of the newest to keep")


@config
class RLConfig:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def __post_init__(self) -> None:
        if self.actor.num_workers > 1 and self.actor.gpus_per_worker > 0 and self.cluster.placement != "disaggregated":
            raise ValueError(
                f"actor.num_workers: {self.actor.num_workers} actor processes on GPUs need "
                f"cluster.placement=disaggregated (a GPU each); '{self.cluster.placement}' puts the actor on "
                "the rollout's GPU. Set cluster.placement=disaggregated, or actor.num_workers=1"
            )
        if self.algorithm.name == "grpo" and self.env.num_envs % self.algorithm.group_size:
            raise ValueError(
                f"algorithm.group_size: must divide the number of envs "
                f"(env.num_workers x env.envs_per_worker = {self.env.num_envs}), got {self.algorithm.group_size}"
            )
