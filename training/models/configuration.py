"""``VLAConfig`` (a transformers composite config) and the model size presets.

A VLA here is: vision encoder(s) (SigLIP and/or DINOv2, as in OpenVLA's Prismatic
"DinoSigLIP" backbone) -> MLP projector -> causal LM (Llama or Qwen2). All three come from
``transformers`` configs, so a model is built offline from its config alone and saves/loads
with ``save_pretrained`` / ``from_pretrained``.

Presets are plain dicts of overrides so that users can add their own (``PRESETS["mine"] = ...``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

FAMILIES = ("openvla", "openvla-oft")
#: The values the string options of :class:`VLAConfig` take.
_CHOICES: dict[str, tuple[str, ...]] = {
    "regression_head_kind": ("mlp", "mlp-resnet"),
    "sequence_layout": ("prismatic", "image-first"),
    "image_interpolation": ("bilinear-antialias", "bicubic-pil"),
    "parallel_decoder": ("queries", "openvla-oft"),
}


class VLAConfig(PreTrainedConfig):
    """Configuration of a SimBridge VLA policy (both families)."""

    model_type = "simbridge_vla"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "siglip_config": SubConfigSpec(
            config_class=AutoConfig, model_type="siglip_vision_model", optional=True
        ),
        "dinov2_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov2", optional=True),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    siglip_config: dict | PreTrainedConfig | None = None
    dinov2_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    family: str = "openvla-oft"
    preset: str = "custom"
    image_size: int = 64
    #: Which hidden state of the vision encoder feeds the projector (-2: Prismatic's penultimate layer).
    vision_feature_layer: int = -1
    #: Merge m x m neighbouring patches into one LM token (pixel-unshuffle): m^2 fewer image tokens.
    token_merge: int = 1
    #: Hidden sizes of the projector MLP after the vision features (last one = LM hidden size).
    projector_dims: list[int] | None = None
    #: Order in which the encoders' features are concatenated (Prismatic: dinov2 then siglip).
    vision_order: list[str] | None = None
    #: Keypoints of the convolutional spatial-softmax stem run next to the ViT on every camera
    #: (:mod:`.keypoints`; robomimic's localization); 0 = no stem.
    keypoint_stem: int = 0
    #: LM tokens the stem's keypoints become per camera (after that camera's patch tokens).
    keypoint_tokens: int = 2
    num_cameras: int = 1
    camera_names: list[str] | None = None
    use_proprio: bool = False
    proprio_dim: int = 8
    chunk_size: int = 1
    action_dim: int = 7
    num_action_bins: int = 256
    text_vocab_size: int = 512
    max_text_tokens: int = 32
    #: Prompt around the instruction and extra token ids appended after it (OpenVLA: "In: ...\nOut:").
    prompt_template: str = "{instruction}"
    prompt_suffix_ids: list[int] | None = None
    #: Special token strings of the instruction tokenizer (pad, bos, eos, unk).
    special_tokens: list[str] | None = None
    #: Vocabulary id of action bin 0 when the LM has a vocabulary of its own (real OpenVLA:
    #: 31744); None = right after the instruction vocabulary, which is then extended by the bins.
    action_token_offset: int | None = None
    #: Normalized action value of each bin (None = the centres of 256 uniform bins on [-1, 1]).
    action_bin_values: list[float] | None = None
    #: OFT only: an L1 regression head on the action-query states (SFT-only; RL uses the bins).
    use_regression_head: bool = False
    #: Its form: "mlp" (hidden -> hidden -> 1 per action token, tanh) or "mlp-resnet" (OpenVLA-OFT's
    #: L1 head: the 7 states of one timestep concatenated through an MLP-ResNet, unbounded output).
    regression_head_kind: str = "mlp"
    #: Where the vision tokens sit in the LM's input: "prismatic" (Prismatic / OpenVLA: the first
    #: text token ``<s>``, the vision tokens [, proprio], then the rest of the prompt) or "image-first"
    #: (checkpoints saved before this field existed: vision tokens, ``<s>`` prompt [, proprio]).
    sequence_layout: str = "prismatic"
    #: The resize to ``image_size``: "bilinear-antialias" or "bicubic-pil" (PIL's bicubic, as
    #: Prismatic's image processor resizes; see ``modeling.resize_images``).
    image_interpolation: str = "bilinear-antialias"
    #: Greedy decoding: False takes the argmax over the action bins only; True over the whole
    #: vocabulary, ids outside the bins clipped to the nearest bin (OpenVLA's ``predict_action``).
    greedy_full_vocab: bool = False
    #: OFT only: "queries" (learned action queries under causal attention, each read at itself) or
    #: "openvla-oft" (OpenVLA-OFT's parallel decoding: zero action embeddings followed by the
    #: ``action_stop_token_id`` token, bidirectional attention over the whole sequence, each action
    #: read from the hidden state before it).
    parallel_decoder: str = "queries"
    action_stop_token_id: int | None = None
    #: Instruction normalization rules of the tokenizer (``strip_whitespace``, ``strip_chars``,
    #: ``lowercase``); None: :class:`InstructionTokenizer`'s defaults.
    prompt_normalization: dict | None = None
    value_head_dims: list[int] | None = None
    lora_rank: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None
    #: With LoRA: module path prefixes that train next to the adapters (``value_head``,
    #: ``action_queries``, ...); None: everything outside the LM and the vision encoders trains.
    lora_trainable: list[str] | None = None
    contract: dict | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any):
        super().__post_init__(**kwargs)
        if self.family not in FAMILIES:
            raise ValueError(f"family: one of {FAMILIES}, got {self.family!r}")
        if self.siglip_config is None and self.dinov2_config is None:
            raise ValueError(
                "a VLA needs at least one vision encoder: set siglip_config and/or dinov2_config"
            )
        if self.projector_dims is None:
            self.projector_dims = [self.text_config.hidden_size, self.text_config.hidden_size]
        if self.projector_dims[-1] != self.text_config.hidden_size:
            raise ValueError("projector_dims: the last entry must equal text_config.hidden_size")
        if self.value_head_dims is None:
            self.value_head_dims = [512, 128]
        if self.camera_names is None:
            self.camera_names = [f"camera{i}" for i in range(self.num_cameras)]
        self.num_cameras = len(self.camera_names)
        if self.lora_targets is None:
            self.lora_targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
        if self.vision_order is None:
            self.vision_order = ["siglip", "dinov2"]
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: one of {allowed}, got {getattr(self, name)!r}")
        if self.keypoint_stem < 0 or self.keypoint_tokens < 1:
            raise ValueError("keypoint_stem: >= 0 keypoints (0 = off); keypoint_tokens: >= 1 token per camera")
        if self.parallel_decoder == "openvla-oft" and self.action_stop_token_id is None:
            raise ValueError("parallel_decoder 'openvla-oft' needs action_stop_token_id (Llama-2: 2, </s>)")
        if self.action_bin_values is not None and len(self.action_bin_values) != self.num_action_bins:
            raise ValueError(f"action_bin_values: one value per bin ({self.num_action_bins})")
        if self.action_token_offset is None:
            # The LM's vocabulary: instruction tokens followed by the action bins.
            self.text_config.vocab_size = self.text_vocab_size + self.num_action_bins
            self.text_config.tie_word_embeddings = False
        elif self.action_token_offset + self.num_action_bins > self.text_config.vocab_size:
            raise ValueError("action_token_offset: the action bins must lie inside the LM vocabulary")

    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size

    @property
    def action_token_begin(self) -> int:
        """Vocabulary id of action bin 0 (bins occupy ``num_action_bins`` consecutive ids)."""
        return self.text_vocab_size if self.action_token_offset is None else self.action_token_offset

    @property
    def num_action_tokens(self) -> int:
        return self.chunk_size * self.action_dim

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size


def _siglip(hidden: int, layers: int, heads: int, image: int, patch: int) -> dict:
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": image,
        "patch_size": patch,
        "vision_use_head": False,
    }


def _dinov2(hidden: int, layers: int, heads: int, image: int, patch: int) -> dict:
    return {
        "model_type": "dinov2",
        "hidden_size": hidden,
        "mlp_ratio": 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": image,
        "patch_size": patch,
    }


def _lm(kind: str, hidden: int, layers: int, heads: int, kv_heads: int, inter: int) -> dict:
    return {
        "model_type": kind,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
    }


#: Model size presets: overrides of :class:`VLAConfig` fields (sub-configs as dicts).
PRESETS: dict[str, dict[str, Any]] = {
    # ~3.8M parameters: SigLIP 64 px / patch 8, 2 layers x 128, 2x2 merged -> 16 LM tokens per camera;
    # Llama 4 layers x 256.
    "tiny": {
        "image_size": 64,
        "token_merge": 2,
        "siglip_config": _siglip(128, 2, 4, 64, 8),
        "text_config": _lm("llama", 256, 4, 4, 4, 512),
        "text_vocab_size": 512,
    },
    # ~55M parameters: fused SigLIP + DINOv2 (Prismatic's DinoSigLIP) 128 px / patch 16; Qwen2 10 x 512.
    "small": {
        "image_size": 128,
        "siglip_config": _siglip(384, 6, 6, 128, 16),
        "dinov2_config": _dinov2(384, 6, 6, 128, 16),
        "text_config": _lm("qwen2", 512, 10, 8, 2, 1536),
        "text_vocab_size": 1024,
        "projector_dims": [2048, 512, 512],
    },
}
