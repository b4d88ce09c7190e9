"""RL algorithm core against hand-computed values: GAE, the PPO loss, GRPO advantages/filtering."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from simbridge.data.config import ConfigError, load_config
from simbridge.training.rl.advantages import compute_gae, group_advantages
from simbridge.training.rl.algorithms import ALGORITHMS, build_algorithm
from simbridge.training.rl.batch import RolloutBatch
from simbridge.training.rl.config import ActorConfig, AlgorithmConfig, RLConfig
from simbridge.training.rl.placement import ResourceShortfall, check_resources, resource_plan
from simbridge.training.rl.ppo import is_critic_parameter, ppo_loss
from simbridge.training.rl.toy import ToyPolicy, ToyReachEnv


def test_gae_matches_hand_computation_with_episode_boundary():
    rewards = np.array([[1.0], [0.0], [2.0]])
    values = np.array([[0.5], [0.4], [0.3]])
    dones = np.array([[False], [True], [False]])
    adv, ret = compute_gae(rewards, values, dones, last_values=np.array([1.0]), gamma=0.9, gae_lambda=0.8)
    # t=2: 2 + 0.9*1.0 - 0.3 = 2.6 ; t=1 (episode ends): 0 - 0.4 = -0.4 (nothing bootstrapped)
    # t=0: delta = 1 + 0.9*0.4 - 0.5 = 0.86 ; A = 0.86 + 0.9*0.8*(-0.4) = 0.572
    np.testing.assert_allclose(adv[:, 0], [0.572, -0.4, 2.6], atol=1e-6)
    np.testing.assert_allclose(ret[:, 0], [1.072, 0.0, 2.9], atol=1e-6)


def test_gae_lambda_one_is_discounted_return_minus_value():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(5, 2))
    v = rng.normal(size=(5, 2))
    adv, ret = compute_gae(r, v, np.zeros((5, 2), bool), np.zeros(2), gamma=0.5, gae_lambda=1.0)
    expected = np.array([sum(0.5**k * r[t + k] for k in range(5 - t)) for t in range(5)])
    np.testing.assert_allclose(ret, expected, atol=1e-5)
    np.testing.assert_allclose(adv, expected - v, atol=1e-5)


def _t(*x):
    return torch.tensor(x, dtype=torch.float64)


def test_ppo_loss_matches_hand_computation():
    cfg = AlgorithmConfig(clip_low=0.2, value_clip=0.2, huber_delta=10.0, value_coef=0.5, entropy_coef=0.01)
    new_logp = _t(math.log(1.5), math.log(0.5), 0.0)
    old_logp = _t(0.0, 0.0, 0.0)
    loss, m = ppo_loss(
        new_logp, old_logp, advantages=_t(1.0, -1.0, 2.0), new_values=_t(1.0, 3.0, 1.0),
        old_values=_t(0.0, 2.0, 1.0), returns=_t(0.5, 2.5, 1.0), entropy=_t(1.0, 2.0, 3.0), cfg=cfg,
    )
    # policy: max(-A*r, -A*clip(r)) = [-1.2, 0.8, -2.0] -> mean -0.8
    assert m["policy_loss"] == pytest.approx(-0.8)
    # value: errors 0.5 (unclipped) vs 0.3 (clipped) -> 0.5*0.5^2 = 0.125 for the first two, 0 for the last
    assert m["value_loss"] == pytest.approx(0.25 / 3)
    assert m["entropy"] == pytest.approx(2.0)
    assert loss.item() == pytest.approx(-0.8 + 0.5 * 0.25 / 3 - 0.01 * 2.0)
    kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 3
    assert m["approx_kl"] == pytest.approx(kl)
    assert m["clip_fraction"] == pytest.approx(2 / 3)


def test_ppo_value_loss_uses_huber_linear_regime_and_takes_the_worse_of_clipped():
    cfg = AlgorithmConfig(huber_delta=0.1, value_clip=0.2)
    _, m = ppo_loss(_t(0.0), _t(0.0), _t(0.0), new_values=_t(1.0), old_values=_t(0.0), returns=_t(0.5),
                    entropy=_t(0.0), cfg=cfg)
    # |error| 0.5 unclipped -> 0.1*(0.5-0.05) = 0.045 ; clipped value 0.2 -> |0.3| -> 0.025 ; max = 0.045
    assert m["value_loss"] == pytest.approx(0.045)


def test_grpo_group_advantages_and_filtering():
    returns = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1], float)
    groups = np.repeat(np.arange(3), 4)
    adv, keep = group_advantages(returns, groups, filter_equal=True)
    std = np.std([1, 0, 1, 1])
    np.testing.assert_allclose(adv[:4], (np.array([1, 0, 1, 1]) - 0.75) / (std + 1e-6), rtol=1e-5)
    assert keep.tolist() == [True] * 4 + [False] * 8
    assert np.all(adv[4:] == 0)
    adv2, keep2 = group_advantages(returns, groups, filter_equal=False)
    assert keep2.all() and np.all(adv2[4:] == 0)


def _grpo_batch() -> RolloutBatch:
    # 3 steps x 4 envs, groups {0,1} and {2,3}; env 1 finished after step 0; env 3 was dropped.
    T, N = 3, 4
    valid = np.ones((T, N), bool)
    valid[1:, 1] = False
    rewards = np.zeros((T, N), np.float32)
    rewards[2, 0] = 1.0
    rewards[0, 2] = 1.0
    return RolloutBatch(
        obs={"proprio": np.arange(T * N * 8, dtype=np.float32).reshape(T, N, 8)},
        tokens=np.zeros((T, N, 7), np.int64), logprobs=np.zeros((T, N), np.float32),
        values=np.zeros((T, N), np.float32), rewards=rewards, dones=np.zeros((T, N), bool), valid=valid,
        last_values=np.zeros(N, np.float32), group_ids=np.array([0, 0, 1, 1]),
        dropped=np.array([False, False, False, True]),
    )


def test_grpo_compute_advantages_broadcasts_to_valid_steps_and_drops_lonely_groups():
    algo = build_algorithm(AlgorithmConfig(name="grpo"), ActorConfig())
    flat, metrics = algo.compute_advantages(_grpo_batch())
    # group 0: returns [1, 0] -> advantages [+1, -1] (std 0.5); env 0 has 3 valid steps, env 1 one.
    assert sorted(np.round(flat["advantages"], 4).tolist()) == [-1.0, 1.0, 1.0, 1.0]
    # group 1 lost env 3 (dropped): a group of one carries no signal and is filtered.
    assert metrics["groups_kept_fraction"] == 0.5 and metrics["train_steps"] == 4
    assert algo.cfg.clip_upper == pytest.approx(0.28)


def test_grpo_loss_uses_asymmetric_clip():
    algo = build_algorithm(AlgorithmConfig(name="grpo"), ActorConfig())
    ev = SimpleNamespace(logprobs=_t(math.log(1.3), math.log(0.7)), entropy=_t(0.0, 0.0))
    mb = {"logprobs": _t(0.0, 0.0), "advantages": _t(1.0, -1.0)}
    loss, m = algo.loss(ev, mb)
    # ratio 1.3, A>0 -> clipped at 1 + 0.28 ; ratio 0.7, A<0 -> clipped at 1 - 0.2
    assert loss.item() == pytest.approx((-1.28 + 0.8) / 2)
    assert m["clip_fraction"] == 1.0


def toy_batch(policy: ToyPolicy, n: int, rewards: np.ndarray, temperature: float = 1.0):
    """One-step episodes of ``n`` ToyReach envs sampled by ``policy``: (policy inputs, act output, batch)."""
    batch_in = policy.prepare([ToyReachEnv().reset(seed=i)[0] for i in range(n)])
    with torch.no_grad():
        out = policy.act(batch_in, temperature=temperature)
    batch = RolloutBatch(
        obs={k: v.numpy()[None] for k, v in batch_in.items()}, tokens=out.tokens.numpy()[None],
        logprobs=out.logprobs.numpy()[None], values=out.values.numpy()[None],
        rewards=np.asarray(rewards, np.float32)[None], dones=np.ones((1, n), bool), valid=np.ones((1, n), bool),
        last_values=np.zeros(n, np.float32), group_ids=np.zeros(n, np.int64), dropped=np.zeros(n, bool),
    )
    return batch_in, out, batch


def test_ppo_update_on_toy_batch_moves_logprobs_towards_positive_advantages():
    torch.manual_seed(0)
    policy = ToyPolicy(hidden=16)
    batch_in, out, batch = toy_batch(policy, 8, np.where(np.arange(8) % 2 == 0, 1.0, -1.0))
    algo = ALGORITHMS["ppo"](AlgorithmConfig(), ActorConfig(minibatch_size=8, update_epochs=4, lr=1e-2))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    metrics = algo.update(policy, opt, batch)
    with torch.no_grad():
        new = policy.evaluate(batch_in, out.tokens).logprobs - out.logprobs
    assert new[::2].mean() > 0 > new[1::2].mean()
    assert metrics["approx_kl"] >= 0 and 0 <= metrics["clip_fraction"] <= 1 and metrics["grad_norm"] > 0


def test_ppo_ratio_is_taken_at_the_rollout_temperature():
    # Rollouts sampled at temperature 0.5 record that distribution's log-probs; the update must
    # evaluate at the same temperature, else its ratio is off before any weight moved.
    torch.manual_seed(0)
    policy = ToyPolicy(hidden=16)
    with torch.no_grad():  # a peaked distribution (the fresh head is near uniform at any temperature)
        policy.action_head.weight.normal_(0.0, 3.0)
    N = 16
    _, _, batch = toy_batch(policy, N, np.linspace(-1, 1, N), temperature=0.5)
    algo = ALGORITHMS["ppo"](AlgorithmConfig(), ActorConfig(minibatch_size=N))
    frozen = torch.optim.SGD(policy.parameters(), lr=0.0)  # weights stay: the ratio must be exactly 1
    same = algo.update(policy, frozen, batch, temperature=0.5)
    assert same["approx_kl"] == pytest.approx(0.0, abs=1e-6) and same["clip_fraction"] == 0.0
    wrong = algo.update(policy, frozen, batch, temperature=1.0)
    assert wrong["approx_kl"] > 1e-2


def test_critic_warmup_trains_only_the_value_head_first():
    torch.manual_seed(0)
    policy = ToyPolicy(hidden=16)
    _, _, batch = toy_batch(policy, 8, np.where(np.arange(8) % 2 == 0, 1.0, -1.0))
    algo = ALGORITHMS["ppo"](AlgorithmConfig(critic_warmup_iterations=1), ActorConfig(minibatch_size=4, lr=1e-2))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)

    def snapshot() -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in policy.named_parameters()}

    def moved(before: dict, after: dict) -> set[str]:
        return {n for n in before if not torch.equal(before[n], after[n])}

    start = snapshot()
    warm = algo.update(policy, opt, batch, iteration=0)
    after_warmup = snapshot()
    assert moved(start, after_warmup) == {"value_head.weight", "value_head.bias"}
    assert warm["critic_warmup"] == 1.0
    normal = algo.update(policy, opt, batch, iteration=1)
    assert {"trunk.0.weight", "action_head.weight"} <= moved(after_warmup, snapshot())
    assert normal["critic_warmup"] == 0.0
    with pytest.raises(ConfigError, match="critic_warmup_iterations"):
        load_config(RLConfig, data={"algorithm": {"name": "grpo", "critic_warmup_iterations": 2}})


def test_only_the_value_head_is_critic_in_the_small_preset():
    # The critic gets its own learning rate and is all that trains in critic warm-up: a vision
    # encoder's attention "value" projection must not be taken for it (a substring test did).
    from simbridge.training.models import build_policy

    names = [n for n, _ in build_policy("openvla-oft", "small").named_parameters()]
    critic = {n for n in names if is_critic_parameter(n)}
    assert critic and critic == {n for n in names if n.startswith("value_head.")}
    vision = [n for n in names if n.startswith(("siglip.", "dinov2."))]
    projections = [n for n in vision if "attention" in n or "self_attn" in n]
    assert any(n.startswith("dinov2.") for n in projections) and any(n.startswith("siglip.") for n in projections)
    assert not critic & set(vision)
    # transformers 4 names DINOv2's projection attention.attention.value (the installed version may not)
    for name in ("dinov2.encoder.layer.0.attention.attention.value.weight",
                 "siglip.vision_model.encoder.layers.0.self_attn.v_proj.bias", "language_model.value.weight"):
        assert not is_critic_parameter(name), name


def test_critic_parameters_are_found_through_peft_and_compile_wrappers():
    from peft import LoraConfig, get_peft_model

    from simbridge.training.models import build_policy

    policy = build_policy("openvla-oft", "tiny")
    wrapped = get_peft_model(policy, LoraConfig(r=2, target_modules=["v_proj"], modules_to_save=["value_head"]))
    names = [n for n, _ in wrapped.named_parameters()]
    critic = {n for n in names if is_critic_parameter(n)}
    # peft keeps the head (original_module) and its trainable copy (modules_to_save): both are the critic
    assert critic == {n for n in names if n.startswith("base_model.model.value_head.")}
    assert any(".modules_to_save." in n for n in critic) and not any("v_proj" in n for n in critic)
    assert is_critic_parameter("_orig_mod.value_head.0.weight")  # torch.compile
    assert is_critic_parameter("module.value_head.4.bias")  # DistributedDataParallel
    assert not is_critic_parameter("_orig_mod.dinov2.encoder.layer.0.attention.attention.value.weight")


def test_resume_point_is_the_newest_complete_checkpoint_and_its_iteration(tmp_path):
    from simbridge.training.checkpoint import latest_checkpoint, save_checkpoint
    from simbridge.training.rl.runner import ResumePoint, resume_point

    assert resume_point(tmp_path) is None
    policy = ToyPolicy(hidden=8)
    save_checkpoint(policy, tmp_path, 3)
    newest = save_checkpoint(policy, tmp_path, 7)
    assert resume_point(tmp_path) == ResumePoint(newest, 7) and latest_checkpoint(tmp_path) == newest


def test_config_rejects_bad_values_with_the_key():
    with pytest.raises(ConfigError, match="pipeline_stage_num"):
        load_config(RLConfig, data={"env": {"envs_per_worker": 3, "pipeline_stage_num": 2}})
    with pytest.raises(ConfigError, match="group_size"):
        load_config(RLConfig, data={"algorithm": {"name": "grpo", "group_size": 3}, "env": {"envs_per_worker": 4}})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(RLConfig, data={"runner": {"iteratons": 3}})
    with pytest.raises(ConfigError, match="time_budget_min"):
        load_config(RLConfig, data={"runner": {"time_budget_min": 0}})


def test_resource_plans_per_placement_mode():
    cfg = load_config(RLConfig, data={"env": {"num_workers": 2}, "cluster": {"placement": "disaggregated"}})
    plan = resource_plan(cfg)
    assert plan.total_cpus == 4 and len(plan.bundles) == 4  # 2 env + rollout + actor
    hybrid = resource_plan(load_config(RLConfig, data={"env": {"num_workers": 2}, "cluster": {"placement": "hybrid"}}))
    assert hybrid.total_cpus == 3 and hybrid.actor_bundle == hybrid.rollout_bundle
    colloc = resource_plan(load_config(RLConfig, data={"env": {"num_workers": 2},
                                                       "cluster": {"placement": "collocated"}}))
    assert colloc.total_cpus == 2 and len(colloc.bundles) == 1
    with pytest.raises(ResourceShortfall, match=r"4 CPU needed but the Ray cluster has 2 \(short by 2\)"):
        check_resources(plan, {"CPU": 2.0}, "disaggregated")
    gpu = resource_plan(load_config(RLConfig, data={"rollout": {"gpus_per_worker": 1.0}}))
    with pytest.raises(ResourceShortfall, match="1 GPU needed"):
        check_resources(gpu, {"CPU": 8.0}, "hybrid")
    check_resources(hybrid, {"CPU": 3.0}, "hybrid")  # exactly enough: no error


@pytest.mark.parametrize("placement", ["collocated", "disaggregated", "hybrid"])
def test_env_workers_get_their_own_gpu_range(placement):
    """GPU simulation: each env worker's GPUs are in the plan, next to the rollout's and actor's."""
    cfg = load_config(RLConfig, data={"env": {"num_workers": 2, "gpus_per_worker": 1.0},
                                      "rollout": {"gpus_per_worker": 1.0}, "actor": {"gpus_per_worker": 1.0},
                                      "cluster": {"placement": placement}})  # fmt: skip
    plan = resource_plan(cfg)
    assert plan.gpu_shares["env"] > 0
    if placement == "collocated":  # one bundle: its GPUs are shared by the 2 env workers, rollout, actor
        assert plan.total_gpus == 2 and 2 * plan.gpu_shares["env"] + plan.gpu_shares["rollout"] + \
            plan.gpu_shares["actor"] == pytest.approx(2)
    else:
        assert [plan.bundles[i].get("GPU") for i in plan.env_bundles] == [1.0, 1.0]
        assert plan.total_gpus == (4 if placement == "disaggregated" else 3)
        assert "env 2 worker(s) x 1 CPU + 1 GPU" in plan.breakdown["env"]
    with pytest.raises(ResourceShortfall, match="GPU needed"):
        check_resources(plan, {"CPU": 16.0, "GPU": 1.0}, placement)


def test_cli_resolves_launch_configs_for_both_algorithms(capsys):
    from simbridge.data.cli import main

    repo = __import__("pathlib").Path(__file__).resolve().parents[2]
    for algo, config in (("ppo", "ppo_maniskill.yaml"), ("grpo", "grpo_maniskill.yaml"), ("grpo", "grpo_toy.yaml")):
        rc = main(["train", algo, "--config", str(repo / "launch/configs" / config), "--print-config",
                   "runner.iterations=3"])
        out = capsys.readouterr().out
        assert rc == 0
        cfg = __import__("yaml").safe_load(out)
        assert cfg["algorithm"]["name"] == algo and cfg["runner"]["iterations"] == 3
        if config.startswith("grpo"):
            assert cfg["algorithm"]["clip_high"] in (None, 0.28) and cfg["reward"]["dense_coef"] == 0.0
    rc = main(["train", "ppo", "--config", str(repo / "launch/configs/ppo_toy.yaml"), "env.pipeline_stage_num=3"])
    assert rc == 2 and "pipeline_stage_num" in capsys.readouterr().err


def test_a_warm_start_renders_the_cameras_its_checkpoint_was_trained_on(tmp_path):
    from simbridge.data.config import ConfigError
    from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
    from simbridge.training.checkpoint import save_checkpoint
    from simbridge.training.models import build_policy
    from simbridge.training.rl.config import EnvConfig, PolicyConfig
    from simbridge.training.rl.factories import env_for_warm_start

    def checkpoint(*cams: str, size: int = 96):
        contract = PolicyContract(
            observation=ObservationSpec(cameras=tuple(CameraSpec(c, size, size) for c in cams)), chunk_size=4
        )
        return save_checkpoint(build_policy("openvla-oft", "tiny", contract=contract), tmp_path / "_".join(cams), 1)

    env = EnvConfig()  # scene only, 128 px
    matched = env_for_warm_start(env, PolicyConfig(init_checkpoint=str(checkpoint("scene", "wrist"))))
    assert matched.spec.wrist_camera and matched.spec.camera_size == (96, 96)
    assert [c.name for c in matched.spec.cameras] == ["scene", "wrist"]
    assert matched.spec.task == env.spec.task and matched.envs_per_worker == env.envs_per_worker
    assert env_for_warm_start(env, PolicyConfig()) is env  # a fresh policy: the config decides
    same = env_for_warm_start(env, PolicyConfig(init_checkpoint=str(checkpoint("scene", size=128))))
    assert same is env  # the checkpoint wants what the config renders already
    with pytest.raises(ConfigError, match="agentview"):
        env_for_warm_start(env, PolicyConfig(init_checkpoint=str(checkpoint("agentview"))))
    with pytest.raises(ConfigError, match=r"init_checkpoint.*does not exist"):
        env_for_warm_start(env, PolicyConfig(init_checkpoint=str(tmp_path / "missing")))
