"""VLA policies: the shared vision-language backbone (the two action decoders: :mod:`.families`).

Sequence fed to the LM (all as input embeddings), Prismatic's layout (``sequence_layout``)::

    [<bos>][camera tokens (projected patches) ...][proprio][<pad>... prompt tokens]  [action part]
    |<------------------------------ prefix, length L ----------------------------->|

(the first real text token leads, as Prismatic inserts the patches right after ``<s>``; with
left padding its copy inside the padded text segment is masked out). Checkpoints saved before
``sequence_layout`` existed keep their "image-first" layout: patches, ``<bos>`` prompt, proprio.

* ``openvla``: the action part is 7·K action *tokens* decoded autoregressively with a KV
  cache; position ``L-1`` emits the first one. Logits of non-action vocabulary ids are
  masked to ``-inf`` so only the last 256 ids (the action bins) can be emitted when sampling;
  greedy decoding of converted OpenVLA checkpoints takes the argmax over the whole vocabulary
  and clips ids outside the bins to the nearest bin (``greedy_full_vocab``, as ``predict_action``).
* ``openvla-oft``: the action part is 7·K *action query* embeddings; one forward pass yields
  all K x 7 bin distributions at once (parallel decoding). Discrete bins keep exact log-probs
  for RL; an optional L1 regression head on the same states serves SFT. ``parallel_decoder``
  "queries" (the default) learns the queries and attends causally; "openvla-oft" is OpenVLA-OFT's
  own pattern (zero embeddings + ``</s>``, bidirectional attention, states read one position
  earlier) for converted OFT checkpoints.

Both share a value head (hidden -> 512 -> 128 -> 1, GELU) read at the hidden state of the
position that emits the first action token (RL4VLA / RLinf). Log-probs are sums over the
action tokens; ``act`` and ``evaluate`` compute them with the same code so they agree.
Decoding is written once per family (``_decode``); ``greedy_decode`` is its argmax form, what
``act(deterministic=True)`` runs and what the ONNX exporter traces into a bundle's graph.

Prompts are left-padded inside the text segment; position ids come from the attention
mask, so padding never shifts the action positions. Image preprocessing: :mod:`.images`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel

from simbridge.data.spec import ContractError, Observation, PolicyContract
from simbridge.training.models.action_tokenizer import STATS_FILE, ActionStats
from simbridge.training.models.configuration import VLAConfig
from simbridge.training.models.decoding import ActionDecoding, ForwardOutput
from simbridge.training.models.images import (  # noqa: F401  (re-exported: sft, the exporter)
    ENCODER_NORMALIZATION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_INTERPOLATION,
    SIGLIP_MEAN,
    SIGLIP_STD,
    merge_patches,
    normalize,
    resize_images,
)
from simbridge.training.models.keypoints import KeypointStem
from simbridge.training.models.text_tokenizer import TOKENIZER_FILE, InstructionTokenizer

WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class VLAPolicy(PreTrainedModel, ActionDecoding):
    """Base class of both families; ``VLAPolicy.from_pretrained`` returns the right subclass."""

    config_class = VLAConfig
    config: VLAConfig
    base_model_prefix = "vla"
    main_input_name = "pixel_values"
    _supports_sdpa = True
    _supports_attention_backend = True
    family: ClassVar[str] = ""
    #: True: action tokens are decoded one at a time with a KV cache; False: all in one pass.
    autoregressive: ClassVar[bool] = False

    def __init__(self, config: VLAConfig):
        super().__init__(config)
        self.siglip = (
            AutoModel.from_config(config.siglip_config) if config.siglip_config is not None else None
        )
        self.dinov2 = (
            AutoModel.from_config(config.dinov2_config) if config.dinov2_config is not None else None
        )
        encoders = [c for c in (config.siglip_config, config.dinov2_config) if c is not None]
        patches = {(c.image_size // c.patch_size) ** 2 for c in encoders}
        if len(patches) != 1:
            raise ValueError(
                "fused vision encoders must produce the same number of patches (image/patch size)"
            )
        self.num_patches = patches.pop()
        merge = config.token_merge
        grid = int(self.num_patches**0.5)
        if grid * grid != self.num_patches or grid % merge:
            raise ValueError(f"token_merge {merge} must divide the {grid}x{grid} patch grid")
        vision_dim = sum(c.hidden_size for c in encoders) * merge * merge
        hidden = config.hidden_size
        self.projector = _mlp([vision_dim, *config.projector_dims])
        self.camera_embed = nn.Embedding(config.num_cameras, hidden)
        self.keypoint_stem = (
            KeypointStem(config.keypoint_stem, config.keypoint_tokens, hidden) if config.keypoint_stem else None
        )
        self.proprio_proj = _mlp([config.proprio_dim, hidden, hidden]) if config.use_proprio else None
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.value_head = _mlp([hidden, *config.value_head_dims, 1])
        self._build_action_modules()
        if config.lora_rank > 0:
            self._inject_lora()
        # Attached by build_policy / from_pretrained (saved next to the weights, not in them).
        self.tokenizer: InstructionTokenizer | None = None
        self.action_stats: ActionStats | None = None
        self.post_init()

    def _build_action_modules(self) -> None:
        """Family-specific modules (action queries, regression head)."""

    def _inject_lora(self) -> None:
        """LoRA adapters on the LM (peft); the LM's base weights and the vision encoders freeze."""
        from peft import LoraConfig, inject_adapter_in_model

        cfg = LoraConfig(
            r=self.config.lora_rank,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout,
            target_modules=list(self.config.lora_targets),
        )
        inject_adapter_in_model(cfg, self.language_model)
        self._set_lora_trainable()

    def _set_lora_trainable(self) -> None:
        """Freeze all but the adapters (and ``lora_trainable``; None: all outside the LM and towers)."""
        for name, p in self.language_model.named_parameters():
            p.requires_grad = "lora_" in name
        for enc in (self.siglip, self.dinov2):
            if enc is not None:
                enc.requires_grad_(False)
        if self.config.lora_trainable is not None:  # only the adapters and the named modules train
            keep = tuple(self.config.lora_trainable)
            for name, p in self.named_parameters():
                p.requires_grad = "lora_" in name or any(name == k or name.startswith(k + ".") for k in keep)

    def merge_lora(self) -> int:
        """Fold LoRA updates into the base weights (e.g. before export); returns layers merged."""
        from peft.tuners.lora import LoraLayer

        merged = 0
        for module in self.language_model.modules():
            if isinstance(module, LoraLayer) and not module.merged:
                module.merge()
                merged += 1
        return merged

    # --- contract / properties ------------------------------------------------------------
    @property
    def contract(self) -> PolicyContract:
        if self.config.contract is None:
            return PolicyContract(chunk_size=self.config.chunk_size)
        return PolicyContract.from_dict(self.config.contract)

    @property
    def action_token_begin(self) -> int:
        return self.config.action_token_begin

    @property
    def num_action_tokens(self) -> int:
        return self.config.num_action_tokens

    # --- inputs ---------------------------------------------------------------------------
    def prepare_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, N_cam, H, W, 3) -> float (B, N_cam, 3, S, S) in [0, 1], resized to the model."""
        x = torch.as_tensor(images)
        if x.dim() != 5 or x.shape[-1] != 3:
            raise ContractError(f"images must be (batch, cameras, H, W, 3) uint8, got shape {tuple(x.shape)}")
        b, n, h, w, _ = x.shape
        x = x.permute(0, 1, 4, 2, 3).reshape(b * n, 3, h, w).float().div_(255.0)
        size = self.config.image_size
        resized = resize_images(x, size, self.config.image_interpolation)
        return resized.reshape(b, n, 3, size, size).to(self.device)

    def prepare_text(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            raise RuntimeError("this policy has no instruction tokenizer; build it with build_policy()")
        ids, mask = self.tokenizer.batch(instructions)
        return ids.to(self.device), mask.to(self.device)

    def prepare_proprio(self, proprio: np.ndarray) -> torch.Tensor:
        p = np.asarray(proprio, np.float32)
        if self.action_stats is not None:
            p = self.action_stats.normalize_proprio(p)  # (and clipped, for OFT's q01/q99 statistics)
        return torch.as_tensor(p, dtype=torch.float32, device=self.device)

    def prepare(self, observations: Sequence[Observation]) -> dict[str, torch.Tensor]:
        """Contract observations -> model inputs: pixel_values, input_ids, attention_mask, proprio."""
        if not observations:
            raise ValueError("prepare() needs at least one observation")
        cams = self.config.camera_names
        for obs in observations:
            missing = [c for c in cams if c not in obs.images]
            if missing:
                raise ContractError(
                    f"observation lacks camera(s) {missing}; this policy was trained with {cams}, got {sorted(obs.images)}"
                )
        images = np.stack([np.stack([np.asarray(o.images[c]) for c in cams]) for o in observations])
        ids, mask = self.prepare_text([o.instruction for o in observations])
        batch = {"pixel_values": self.prepare_images(images), "input_ids": ids, "attention_mask": mask}
        batch["proprio"] = self.prepare_proprio(np.stack([o.proprio() for o in observations]))
        return batch

    # --- backbone -------------------------------------------------------------------------
    def encoder_inputs(self, pixel_values: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """(B·N, 3, S, S) in [0, 1] -> each encoder's normalized input, in ``vision_order``
        (Prismatic's processor stacks these along the channels: DINOv2's, then SigLIP's)."""
        encoders = {"siglip": self.siglip, "dinov2": self.dinov2}
        return [(name, normalize(pixel_values, *ENCODER_NORMALIZATION[name]))
                for name in self.config.vision_order if encoders.get(name) is not None]  # fmt: skip

    def vision_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, S, S) in [0, 1] -> (B, N·P, hidden) projected patch tokens."""
        b, n = pixel_values.shape[:2]
        layer = self.config.vision_feature_layer
        feats = []
        for name, x in self.encoder_inputs(pixel_values.flatten(0, 1)):
            hidden = getattr(self, name)(pixel_values=x, output_hidden_states=True).hidden_states[layer]
            if name == "dinov2":  # drop CLS (+ register) tokens
                hidden = hidden[:, 1 + getattr(self.config.dinov2_config, "num_register_tokens", 0) :]
            feats.append(hidden)
        tokens = self.projector(merge_patches(torch.cat(feats, dim=-1), self.config.token_merge))
        if self.keypoint_stem is not None:  # each camera's keypoint tokens follow its patches
            tokens = torch.cat([tokens, self.keypoint_stem(pixel_values.flatten(0, 1))], dim=1)
        p = tokens.shape[1]
        tokens = tokens.view(b, n, p, -1) + self.camera_embed.weight[None, :, None, :]
        return tokens.reshape(b, n * p, -1)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.get_input_embeddings()(ids)

    def prefix(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings (B, L, H) and attention mask (B, L) of everything before the actions."""
        vision = self.vision_tokens(batch["pixel_values"])
        if self.proprio_proj is not None:  # one more "vision" token, as OFT appends it to the patches
            vision = torch.cat([vision, self.proprio_proj(batch["proprio"].to(vision.dtype))[:, None]], 1)
        txt = self.embed_tokens(batch["input_ids"])
        mask = batch["attention_mask"].long()
        ones = torch.ones(vision.shape[:2], dtype=torch.long, device=vision.device)
        if self.config.sequence_layout == "image-first":
            if self.proprio_proj is None:
                return torch.cat([vision, txt], 1), torch.cat([ones, mask], 1)
            return (torch.cat([vision[:, :-1], txt, vision[:, -1:]], 1),
                    torch.cat([ones[:, :-1], mask, ones[:, -1:]], 1))  # fmt: skip
        # Prismatic: the vision tokens go right after the first real text token (<s>). With left
        # padding that token sits after the pads: gather it, mask its copy in the text segment.
        first = (mask == 0).sum(-1, keepdim=True)
        head = txt.gather(1, first.unsqueeze(-1).expand(-1, -1, txt.shape[-1]))
        rest = mask * (mask.cumsum(-1) > 1)
        return torch.cat([head, vision, txt], 1), torch.cat([ones[:, :1], ones, rest], 1)

    def run_lm(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        bidirectional: bool = False,
    ):
        if position_ids is None:
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        attention: torch.Tensor = mask
        if bidirectional:  # every token attends to every non-pad token: an explicit 4-D additive mask
            keep = mask[:, None, None, :].bool().expand(-1, 1, mask.shape[1], -1)
            attention = torch.zeros(keep.shape, dtype=embeds.dtype, device=embeds.device).masked_fill(
                ~keep, torch.finfo(embeds.dtype).min
            )
        return self.language_model.get_decoder()(
            inputs_embeds=embeds,
            attention_mask=attention,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
        )

    # --- the RL interface (decoding: :class:`.decoding.ActionDecoding`) ------------------
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        proprio: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
    ) -> ForwardOutput:
        raise NotImplementedError

    # --- persistence ----------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:  # type: ignore[override]
        """Weights + config + instruction tokenizer + action statistics, all in one directory."""
        super().save_pretrained(save_directory, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save(save_directory)
        if self.action_stats is not None:
            self.action_stats.save(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any):  # type: ignore[override]
        """Load a saved policy from a local directory (never the hub) as its family's class."""
        path = Path(pretrained_model_name_or_path)
        check_policy_dir(path)
        raw = json.loads((path / "config.json").read_text())
        family = raw.get("family")
        from simbridge.training.models.registry import POLICIES

        if family not in POLICIES:
            raise ValueError(
                f"{path}/config.json: unknown policy family {family!r}; known: {sorted(POLICIES)}"
            )
        target = POLICIES[family]
        kwargs["local_files_only"] = True
        if "sequence_layout" not in raw and "config" not in kwargs:
            # Saved before the Prismatic layout became the default: it was trained image-first.
            config = VLAConfig.from_pretrained(path, local_files_only=True)
            config.sequence_layout = "image-first"
            kwargs["config"] = config
        model = PreTrainedModel.from_pretrained.__func__(target, path, *args, **kwargs)
        if model.config.lora_rank > 0:  # loading made the towers' parameters trainable again
            model._set_lora_trainable()
        model.tokenizer = load_tokenizer_for(model.config, path)
        model.action_stats = ActionStats.load(path)
        model.eval()
        return model


def load_tokenizer_for(config: VLAConfig, path: str | Path) -> InstructionTokenizer:
    """The instruction tokenizer saved in ``path`` with the prompt settings of ``config``."""
    kwargs: dict[str, Any] = {
        "prompt_template": config.prompt_template,
        "suffix_ids": config.prompt_suffix_ids or (),
        "normalization": config.prompt_normalization,
    }
    if config.special_tokens:
        kwargs["special_tokens"] = config.special_tokens
    return InstructionTokenizer.load(path, max_length=config.max_text_tokens, **kwargs)


def check_policy_dir(path: Path) -> None:
    """Raise FileNotFoundError naming the first missing file of a saved policy directory."""
    if not path.is_dir():
        raise FileNotFoundError(f"policy directory {path} does not exist; pass a checkpoint directory")
    required = ["config.json", TOKENIZER_FILE, STATS_FILE]
    for name in required:
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path} is incomplete: {name} is missing; the checkpoint was not fully written "
                "(use another checkpoint or re-save with save_pretrained())"
            )
    if not any((path / w).is_file() for w in WEIGHTS_FILES):
        raise FileNotFoundError(
            f"{path} is incomplete: model.safetensors (the weights) is missing; "
            "use another checkpoint or re-save with save_pretrained()"
        )
