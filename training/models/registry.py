"""``POLICIES`` (family name -> policy class) and ``build_policy`` (family + preset -> policy).

Add a family by subclassing :class:`~simbridge.training.models.modeling.VLAPolicy`
(``forward`` + ``act``) and registering it here: ``POLICIES["my-family"] = MyPolicy``.
"""

from __future__ import annotations

import copy
from typing import Any

from simbridge.data.spec import PolicyContract
from simbridge.training.models.action_tokenizer import ActionStats
from simbridge.training.models.configuration import PRESETS, VLAConfig
from simbridge.training.models.families import OpenVLAOFTPolicy, OpenVLAPolicy
from simbridge.training.models.modeling import VLAPolicy
from simbridge.training.models.text_tokenizer import InstructionTokenizer

POLICIES: dict[str, type[VLAPolicy]] = {
    OpenVLAPolicy.family: OpenVLAPolicy,
    OpenVLAOFTPolicy.family: OpenVLAOFTPolicy,
}


def build_policy(
    family: str = "openvla-oft",
    preset: str = "tiny",
    contract: PolicyContract | None = None,
    action_stats: ActionStats | None = None,
    tokenizer: InstructionTokenizer | None = None,
    seed: int | None = 0,
    **overrides: Any,
) -> VLAPolicy:
    """A freshly initialised policy of ``family`` at size ``preset`` for ``contract``.

    ``overrides`` set :class:`VLAConfig` fields (``use_regression_head=True``, ``lora_rank=8``,
    ``use_proprio=False``, ...). Without a tokenizer, one is trained on the built-in
    instruction templates; without stats, they span the contract's action limits.
    """
    if family not in POLICIES:
        raise ValueError(f"unknown policy family {family!r}; choose from {sorted(POLICIES)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    contract = contract or PolicyContract()
    values = copy.deepcopy(PRESETS[preset])
    max_text = int(overrides.get("max_text_tokens", 32))
    if tokenizer is None:
        tokenizer = InstructionTokenizer.train(
            vocab_size=values.get("text_vocab_size", 512), max_length=max_text
        )
    values.update(
        family=family,
        preset=preset,
        camera_names=list(contract.observation.camera_names),
        use_proprio=contract.observation.use_proprio if family == "openvla-oft" else False,
        chunk_size=contract.chunk_size,
        contract=contract.to_dict(),
    )
    values.update(overrides)
    values["text_vocab_size"] = tokenizer.vocab_size
    values["max_text_tokens"] = tokenizer.max_length = int(values.get("max_text_tokens", max_text))
    values.update(
        prompt_template=tokenizer.prompt_template,
        special_tokens=list(tokenizer.special_tokens),
        prompt_suffix_ids=list(tokenizer.suffix_ids),
        prompt_normalization=tokenizer.normalization,
    )
    config = VLAConfig(**values)
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    policy = POLICIES[family](config)
    policy.tokenizer = tokenizer
    policy.action_stats = action_stats or ActionStats.from_action_spec(contract.action)
    return policy.eval()
