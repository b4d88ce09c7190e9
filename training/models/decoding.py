"""Action decoding shared by both policy families: outputs, bins <-> values, act / evaluate.

:class:`ActionDecoding` is a mixin of :class:`~.modeling.VLAPolicy`: it turns the LM's hidden
states (from the family's ``forward``) into action chunks. ``act`` samples or takes the argmax,
``evaluate`` recomputes log-probs of given tokens (the RL update), and both use the same log-prob
code so they agree. ``greedy_decode`` is the one greedy implementation: ``act(deterministic=True)``
runs it and the ONNX exporter traces it. Families that decode autoregressively (OpenVLA) override
``_decode`` and reuse ``_sample`` / ``_finish``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simbridge.training.models.action_tokenizer import ActionStats, bin_centers, discretize


@dataclass
class ActOutput:
    """What a rollout needs from one policy call (batch B, chunk K, T = 7·K action tokens)."""

    actions: torch.Tensor  # (B, K, 7) float32, physical units (de-normalized)
    tokens: torch.Tensor  # (B, T) long, bin ids 0..255
    logprobs: torch.Tensor  # (B,) sum of the action tokens' log-probs
    values: torch.Tensor  # (B,)
    token_ids: torch.Tensor  # (B, T) long, the raw vocabulary ids that were emitted
    normalized_actions: torch.Tensor  # (B, K, 7) in [-1, 1]


@dataclass
class EvalOutput:
    """Teacher-forced statistics of given tokens (the RL update's view of a rollout)."""

    logprobs: torch.Tensor  # (B,)
    entropy: torch.Tensor  # (B,) sum over the action tokens
    values: torch.Tensor  # (B,)
    token_logprobs: torch.Tensor  # (B, T)
    action_logits: torch.Tensor  # (B, T, num_bins), untempered
    regression: torch.Tensor | None = None  # (B, T) in [-1, 1] (OFT regression head)


@dataclass
class ForwardOutput:
    action_logits: torch.Tensor  # (B, T, num_bins)
    values: torch.Tensor  # (B,)
    regression: torch.Tensor | None = None
    greedy_ids: torch.Tensor | None = None  # (B, T) full-vocabulary argmax (greedy_full_vocab)
    action_hidden: torch.Tensor | None = None  # (B, T, H) OFT's action-query states (SFT's auxiliary head)


class ActionDecoding:
    """Decoding half of :class:`~.modeling.VLAPolicy` (needs its ``config``, ``language_model``,
    ``action_stats``, ``contract`` and ``forward``)."""

    def action_logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., H) -> logits of the action bins (..., num_bins)."""
        begin = self.action_token_begin
        return self.language_model.get_output_embeddings()(hidden)[
            ..., begin : begin + self.config.num_action_bins
        ]

    def masked_vocab_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits with every non-action id set to -inf (what decoding samples from)."""
        logits = self.language_model.get_output_embeddings()(hidden)
        begin = self.action_token_begin
        logits[..., :begin] = float("-inf")
        logits[..., begin + self.config.num_action_bins :] = float("-inf")
        return logits

    def bin_values(self, bins: torch.Tensor) -> torch.Tensor:
        """Bin ids -> normalized action values in [-1, 1]."""
        if self.config.action_bin_values is None:
            return bin_centers(bins, self.config.num_action_bins)
        table = torch.tensor(self.config.action_bin_values, dtype=torch.float32, device=bins.device)
        return table[bins]

    def tokens_from_normalized(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalized actions -> the bin ids whose values are nearest (the SFT targets)."""
        if self.config.action_bin_values is None:
            return discretize(normalized, self.config.num_action_bins)
        table = torch.tensor(self.config.action_bin_values, dtype=normalized.dtype, device=normalized.device)
        return (normalized.unsqueeze(-1) - table).abs().argmin(-1)

    def evaluate(
        self, batch: dict[str, torch.Tensor], tokens: torch.Tensor, temperature: float = 1.0
    ) -> EvalOutput:
        """Teacher-forced log-probs / entropy / values of ``tokens`` (B, T) bin ids."""
        out = self.forward(**_model_inputs(batch), tokens=tokens)
        logp_all = torch.log_softmax(out.action_logits / temperature, dim=-1)
        token_logp = logp_all.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return EvalOutput(
            logprobs=token_logp.sum(-1),
            entropy=entropy.sum(-1),
            values=out.values,
            token_logprobs=token_logp,
            action_logits=out.action_logits,
            regression=out.regression,
        )

    @torch.no_grad()
    def act(
        self,
        batch: dict[str, torch.Tensor],
        deterministic: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> ActOutput:
        """One action chunk per observation: greedy (``deterministic``) or sampled at ``temperature``."""
        if deterministic:
            return self.greedy_decode(batch, temperature=temperature)
        return self._decode(batch, False, temperature, generator)

    def greedy_decode(self, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> ActOutput:
        """Argmax decoding of one action chunk, with the decoding pass's own log-probs and values.

        The one implementation of greedy decoding: ``act(deterministic=True)`` runs it and the ONNX
        exporter traces it into the bundle's graph, so it must stay traceable (a fixed number of
        steps, no data-dependent Python branches, no in-place writes). ``temperature`` only scales
        the log-probs. Wrap calls in ``torch.no_grad()``.
        """
        return self._decode(batch, True, temperature, None)

    def _decode(
        self,
        batch: dict[str, torch.Tensor],
        deterministic: bool,
        temperature: float,
        generator: torch.Generator | None,
    ) -> ActOutput:
        """Parallel decoding (the default): every action token's bins from one ``forward`` pass.

        The action-bin logits are exactly the unmasked part of the masked vocabulary logits, so
        sampling from them needs no second pass over the full vocabulary.
        """
        out = self.forward(**_model_inputs(batch))
        logits = out.action_logits
        begin = self.action_token_begin
        raw = None
        if deterministic and out.greedy_ids is not None:
            raw = out.greedy_ids  # ids outside the bins are clipped to the nearest bin
            bins = (raw - begin).clamp(0, self.config.num_action_bins - 1)
        elif deterministic:
            bins = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            bins = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(
                probs.shape[:-1]
            )
        logp = torch.log_softmax(logits / temperature, dim=-1).gather(-1, bins.unsqueeze(-1)).squeeze(-1)
        regression = out.regression if (deterministic and out.regression is not None) else None
        return self._finish(bins + begin if raw is None else raw, logp, out.values, regression)

    def _sample(
        self, hidden: torch.Tensor, deterministic: bool, temperature: float, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked decoding of one or more positions: returns (raw vocab ids, log-probs)."""
        begin = self.action_token_begin
        if deterministic and self.config.greedy_full_vocab:
            # OpenVLA's predict_action: argmax over every id; ids outside the bins clip to the nearest.
            full = self.language_model.get_output_embeddings()(hidden)
            raw = full.argmax(-1)
            logits = full[..., begin : begin + self.config.num_action_bins]
            bins = (raw - begin).clamp(0, self.config.num_action_bins - 1)
        elif deterministic:
            # The argmax over the action bins is the argmax of the masked vocabulary (the rest is
            # -inf); taking it on the slice keeps the traced graph free of in-place masking.
            logits = self.action_logits_from_hidden(hidden)
            bins = logits.argmax(-1)
            raw = bins + begin
        else:
            full = self.masked_vocab_logits(hidden)
            probs = torch.softmax(full / temperature, dim=-1)
            flat = probs.reshape(-1, probs.shape[-1])
            raw = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
            logits, bins = full[..., begin : begin + self.config.num_action_bins], raw - begin
        logp = torch.log_softmax(logits / temperature, dim=-1)
        return raw, logp.gather(-1, bins.unsqueeze(-1)).squeeze(-1)

    def _finish(
        self, raw: torch.Tensor, logp: torch.Tensor, values: torch.Tensor, regression: torch.Tensor | None
    ) -> ActOutput:
        tokens = (raw - self.action_token_begin).clamp(0, self.config.num_action_bins - 1)
        normalized = self.bin_values(tokens)
        if regression is not None:
            normalized = regression
        b = tokens.shape[0]
        normalized = normalized.view(b, self.config.chunk_size, self.config.action_dim)
        stats = self.action_stats or ActionStats.from_action_spec(self.contract.action)
        # OFT's L1 head is unbounded and predict_action unnormalizes it as it is (no clipping).
        clip = not (regression is not None and self.config.regression_head_kind == "mlp-resnet")
        return ActOutput(
            actions=stats.denormalize(normalized, clip=clip).float(),
            tokens=tokens,
            logprobs=logp.sum(-1),
            values=values,
            token_ids=raw,
            normalized_actions=normalized,
        )


def _model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keys = ("pixel_values", "input_ids", "attention_mask", "proprio")
    return {k: batch[k] for k in keys if k in batch}
