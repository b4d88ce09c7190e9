"""The two policy families' action decoders (the shared backbone is :class:`~.modeling.VLAPolicy`).

* :class:`OpenVLAPolicy` (``openvla``): 7·K action tokens decoded autoregressively with a KV cache.
* :class:`OpenVLAOFTPolicy` (``openvla-oft``): a K x 7 chunk in one pass from action queries, either
  SimBridge's learned queries under causal attention or OpenVLA-OFT's own pattern (zero
  embeddings + ``</s>``, bidirectional attention, states read one position early).
"""

from __future__ import annotations

import torch
from torch import nn

from simbridge.training.models.decoding import ActOutput, ForwardOutput
from simbridge.training.models.modeling import VLAPolicy, _mlp
from simbridge.training.models.prismatic import MLPResNetHead


class OpenVLAPolicy(VLAPolicy):
    """OpenVLA: action tokens decoded autoregressively (KV cache), 7·K of them."""

    family = "openvla"
    autoregressive = True
    #: Recompute the sampled tokens' log-probs teacher-forced (one more forward pass; exact match
    #: with evaluate()). False keeps the decoding-time log-probs (within ~1e-5 of evaluate()).
    exact_logprobs: bool = True

    def forward(self, pixel_values, input_ids, attention_mask, proprio=None, tokens=None) -> ForwardOutput:
        batch = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}
        if proprio is not None:
            batch["proprio"] = proprio
        embeds, mask = self.prefix(batch)
        length = embeds.shape[1]
        if tokens is not None and tokens.shape[1] > 1:
            prev = self.embed_tokens(tokens[:, :-1].long() + self.action_token_begin)
            embeds = torch.cat([embeds, prev], dim=1)
            mask = torch.cat([mask, torch.ones(prev.shape[:2], dtype=mask.dtype, device=mask.device)], dim=1)
        hidden = self.run_lm(embeds, mask).last_hidden_state
        steps = tokens.shape[1] if tokens is not None else 1
        h_act = hidden[:, length - 1 : length - 1 + steps]
        return ForwardOutput(
            action_logits=self.action_logits_from_hidden(h_act),
            values=self.value_head(hidden[:, length - 1]).squeeze(-1),
        )

    def _decode(self, batch, deterministic, temperature, generator) -> ActOutput:
        """The 7·K tokens with a KV cache: one pass over the prefix, then one single-token pass
        per further token (the exported graph unrolls this loop)."""
        embeds, mask = self.prefix(batch)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.run_lm(embeds, mask, positions, use_cache=True)
        h = out.last_hidden_state[:, -1]
        values = self.value_head(h).squeeze(-1)
        cache = out.past_key_values
        raws, logps = [], []
        for t in range(self.num_action_tokens):
            raw, logp = self._sample(h, deterministic, temperature, generator)
            raws.append(raw)
            logps.append(logp)
            if t == self.num_action_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
            out = self.run_lm(
                self.embed_tokens(raw[:, None]), mask, positions, past_key_values=cache, use_cache=True
            )
            cache = out.past_key_values
            h = out.last_hidden_state[:, -1]
        return self._finish(torch.stack(raws, 1), torch.stack(logps, 1), values, None)

    @torch.no_grad()
    def act(self, batch, deterministic=False, temperature=1.0, generator=None) -> ActOutput:
        out = super().act(batch, deterministic, temperature, generator)
        if not self.exact_logprobs or not torch.equal(out.tokens + self.action_token_begin, out.token_ids):
            return out  # (full-vocabulary greedy emitted a non-bin id: evaluate() cannot teacher-force it)
        # One teacher-forced pass over the sampled tokens: the log-probs / values then come from
        # exactly the computation evaluate() does (KV-cached decoding differs by float rounding,
        # ~1e-6 per token), so the first PPO ratio is exactly 1.
        ev = self.evaluate(batch, out.tokens, temperature=temperature)
        return self._finish(out.token_ids, ev.token_logprobs, ev.values, None)


class OpenVLAOFTPolicy(VLAPolicy):
    """OpenVLA-OFT: a K x 7 chunk decoded in one pass from learned action queries."""

    family = "openvla-oft"

    def _build_action_modules(self) -> None:
        cfg = self.config
        self.action_queries = nn.Embedding(cfg.num_action_tokens, cfg.hidden_size)
        self.regression_head: nn.Module | None = None
        if cfg.use_regression_head and cfg.regression_head_kind == "mlp-resnet":
            self.regression_head = MLPResNetHead(cfg.hidden_size, cfg.action_dim)
        elif cfg.use_regression_head:
            self.regression_head = _mlp([cfg.hidden_size, cfg.hidden_size, 1])

    def forward(self, pixel_values, input_ids, attention_mask, proprio=None, tokens=None) -> ForwardOutput:
        batch = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}
        if proprio is not None:
            batch["proprio"] = proprio
        embeds, mask = self.prefix(batch)
        b, length = embeds.shape[:2]
        upstream = self.config.parallel_decoder == "openvla-oft"
        parts = [embeds, self.action_queries.weight[None].expand(b, -1, -1).to(embeds.dtype)]
        if upstream:  # OFT's inference sequence ends with </s> after the (zero) action embeddings
            stop = torch.full(
                (b, 1), self.config.action_stop_token_id, dtype=torch.long, device=embeds.device
            )
            parts.append(self.embed_tokens(stop))
        embeds = torch.cat(parts, dim=1)
        mask = torch.cat(
            [mask, torch.ones(b, embeds.shape[1] - length, dtype=mask.dtype, device=mask.device)], 1
        )
        hidden = self.run_lm(embeds, mask, bidirectional=upstream).last_hidden_state
        start = length - 1 if upstream else length  # OFT reads each action from the state before it
        h_act = hidden[:, start : start + self.num_action_tokens]
        regression = None
        if isinstance(self.regression_head, MLPResNetHead):
            regression = self.regression_head(h_act)
        elif self.regression_head is not None:
            regression = torch.tanh(self.regression_head(h_act).squeeze(-1))
        greedy = None
        if self.config.greedy_full_vocab:
            greedy = self.language_model.get_output_embeddings()(h_act).argmax(-1)
        return ForwardOutput(
            action_logits=self.action_logits_from_hidden(h_act),
            values=self.value_head(h_act[:, 0]).squeeze(-1),
            regression=regression,
            greedy_ids=greedy,
            action_hidden=h_act,
        )
