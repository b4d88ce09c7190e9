"""RL fine-tuning on Ray: PPO and GRPO with pipelined env / rollout / actor worker groups.

Modules, in the order data flows:

* ``config``      RLConfig (cluster, env, policy, rollout, actor, algorithm, reward, runner)
* ``factories``   env / policy backends (ManiSkill tasks + VLA policies, or the toy task)
* ``workers``, ``actor_worker``  EnvWorker, RolloutWorker; ActorWorker (RLinf's three worker groups)
* ``placement``   collocated / disaggregated / hybrid placement groups, resource checks
* ``distributed``, ``actor_group``  the data-parallel actor (DDP / FSDP2, gradient accumulation)
* ``records``     StageResult, RolloutRecord, EpisodeRecord: what the workers send through Ray
* ``rollout``     RolloutCollector: pipelined or sequential trajectory collection
* ``buffer``      RolloutBuffer (one iteration's arrays) and ColumnLayout (column <-> env id)
* ``batch``       RolloutBatch: the trajectories the actor trains on
* ``advantages``  GAE and GRPO group-normalised advantages
* ``ppo``, ``grpo``, ``algorithms``  the losses/updates and the ALGORITHMS registry
* ``runner``      the training loop and ``simbridge train ppo|grpo``
* ``toy``         ToyReach env + ToyPolicy: a documented toy task for tests
"""

from simbridge.training.rl.algorithms import ALGORITHMS, build_algorithm, register_algorithm
from simbridge.training.rl.config import RLConfig

__all__ = ["ALGORITHMS", "RLConfig", "build_algorithm", "register_algorithm"]
