"""VLA policies for SimBridge: OpenVLA-style and OpenVLA-OFT-style, built from transformers parts.

    >>> from simbridge.training.models import build_policy
    >>> policy = build_policy("openvla-oft", "tiny", contract=env.contract, action_stats=stats)
    >>> batch = policy.prepare([obs])
    >>> out = policy.act(batch, deterministic=False, temperature=1.0)   # actions, tokens, logprobs, values
    >>> ev = policy.evaluate(batch, out.tokens)                          # same logprobs, + entropy
    >>> policy.save_pretrained("ckpt"); VLAPolicy.from_pretrained("ckpt")

Modules: ``configuration`` (VLAConfig, PRESETS), ``modeling`` (the shared backbone),
``families`` (the two decoders), ``images`` (resize, normalization), ``registry`` (POLICIES,
build_policy), ``action_tokenizer`` (ActionStats, 256 bins), ``text_tokenizer`` (byte-level BPE
instruction tokenizer), ``loaders`` (real OpenVLA / OpenVLA-OFT checkpoints), ``openvla_files``
(their files, read and checked), ``prismatic`` (what those checkpoints are, by their published
files), ``conformance`` (a converted checkpoint vs its files: ``simbridge check-checkpoint``),
``upstream_fixture`` (small checkpoints in their layout).
"""

from simbridge.training.models.action_tokenizer import NUM_BINS, ActionStats, bin_centers, discretize
from simbridge.training.models.configuration import FAMILIES, PRESETS, VLAConfig
from simbridge.training.models.decoding import ActOutput, EvalOutput, ForwardOutput
from simbridge.training.models.families import OpenVLAOFTPolicy, OpenVLAPolicy
from simbridge.training.models.modeling import VLAPolicy, check_policy_dir
from simbridge.training.models.registry import POLICIES, build_policy
from simbridge.training.models.text_tokenizer import InstructionTokenizer

__all__ = [
    "FAMILIES",
    "NUM_BINS",
    "POLICIES",
    "PRESETS",
    "ActOutput",
    "ActionStats",
    "EvalOutput",
    "ForwardOutput",
    "InstructionTokenizer",
    "OpenVLAOFTPolicy",
    "OpenVLAPolicy",
    "VLAConfig",
    "VLAPolicy",
    "bin_centers",
    "build_policy",
    "check_policy_dir",
    "discretize",
]
