"""The instruction tokenizer: a small byte-level BPE trained offline on instruction templates.

Real OpenVLA uses Llama-2's 32k SentencePiece vocabulary; a from-scratch VLA trained in
simulation needs only the words of its task instructions. We train a byte-level BPE (the
``tokenizers`` library) on the built-in pick-and-place templates plus any instructions from
the dataset. Byte-level means every string still tokenizes: an unseen word ("put the
*kiwi* on the plate") falls back to sub-words or single bytes instead of ``<unk>``, which
matters for the RL4VLA "unseen instruction phrasing" evaluation split.

The tokenizer is saved next to the model weights (``instruction_tokenizer.json``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

TOKENIZER_FILE = "instruction_tokenizer.json"
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
#: Prompt around the instruction. OpenVLA wraps it in "What action should the robot take to ...?";
#: a from-scratch policy gains nothing from the fixed words, and every token costs compute.
PROMPT_TEMPLATE = "{instruction}"
_NORMALIZATION_KEYS = ("strip_whitespace", "strip_chars", "lowercase")

# Phrasings and nouns of tabletop manipulation tasks (ManiSkill / RL4VLA / LIBERO style).
_VERBS = ("put", "place", "move", "set", "pick up", "lift", "push", "stack", "open", "close", "grasp", "drop")
_OBJECTS = (
    "cube", "red cube", "green cube", "blue cube", "yellow cube", "block", "ball", "can", "coke can", "apple",
    "banana", "orange", "carrot", "cup", "mug", "bowl", "plate", "spoon", "sponge", "bottle", "eggplant",
    "lemon", "peach", "pepper", "tomato", "toy", "box", "drawer", "object",
)  # fmt: skip
_PLACES = (
    "on the target", "on the plate", "in the bowl", "on the table", "into the basket", "on the tray",
    "on the towel", "in the box", "on top of the cube", "to the left", "to the right", "on the goal",
)  # fmt: skip


def template_corpus() -> list[str]:
    """Instruction sentences the default tokenizer is trained on."""
    return [f"{v} the {o} {p}" for v, o, p in itertools.product(_VERBS, _OBJECTS, _PLACES)]


class InstructionTokenizer:
    """Wraps a ``tokenizers.Tokenizer``: batch encoding with left padding, save/load.

    The class attributes below are the rules :meth:`prompt`, :meth:`encode` and :meth:`batch`
    follow; the exporter copies them into a bundle's manifest (section ``instruction``) so the
    robot's torch-free tokenizer applies the very same ones.
    """

    #: Instruction normalization before the template (defaults; an instance may carry other rules,
    #: see ``normalization``): strip white space, then these trailing characters ("Pick it up!" and
    #: "pick it up" are one prompt), then lowercase. OpenVLA checkpoints only lowercase.
    strip_whitespace: bool = True
    strip_chars: str = ".?!"
    lowercase: bool = True
    #: The prompt is encoded without the library's special tokens; ``prefix_ids`` adds ``<bos>``.
    add_special_tokens: ClassVar[bool] = False
    #: What :meth:`batch` does, for the manifest (fixed, not options): it pads to the longest
    #: prompt of the batch, on the left (position ids come from the mask).
    padding_side: ClassVar[str] = "left"
    pad_to_max_length: ClassVar[bool] = False

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int = 32,
        prompt_template: str = PROMPT_TEMPLATE,
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
        suffix_ids: Sequence[int] = (),
        normalization: Mapping[str, Any] | None = None,
    ):
        self._tok = tokenizer
        for key, value in (normalization or {}).items():
            if key not in _NORMALIZATION_KEYS:
                raise ValueError(f"normalization: unknown rule {key!r}; known: {_NORMALIZATION_KEYS}")
            setattr(self, key, type(getattr(type(self), key))(value))
        self.max_length = int(max_length)
        self.prompt_template = prompt_template
        self.special_tokens = tuple(special_tokens)
        self.suffix_ids = [int(i) for i in suffix_ids]
        ids = [tokenizer.token_to_id(t) for t in self.special_tokens]
        if any(i is None for i in ids):
            raise ValueError(
                f"instruction tokenizer lacks special tokens {self.special_tokens} (pad, bos, eos, unk)"
            )
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = ids

    @classmethod
    def train(
        cls, texts: Iterable[str] = (), vocab_size: int = 512, max_length: int = 32
    ) -> InstructionTokenizer:
        """Train on the built-in templates plus ``texts`` (e.g. the dataset's instructions)."""
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=1,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        corpus = template_corpus() + [PROMPT_TEMPLATE.format(instruction=t) for t in texts]
        tok.train_from_iterator(corpus, trainer)
        return cls(tok, max_length=max_length)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def normalization(self) -> dict[str, Any]:
        """This tokenizer's normalization rules (saved in the policy config, copied to the manifest)."""
        return {key: getattr(self, key) for key in _NORMALIZATION_KEYS}

    @property
    def prefix_ids(self) -> list[int]:
        """Ids before the prompt's own (kept when truncating): ``<bos>``."""
        return [self.bos_id]

    def prompt(self, instruction: str) -> str:
        text = instruction.strip() if self.strip_whitespace else instruction
        text = text.rstrip(self.strip_chars) if self.strip_chars else text
        return self.prompt_template.format(instruction=text.lower() if self.lowercase else text)

    def encode(self, instruction: str) -> list[int]:
        """``<bos>`` + prompt ids (+ suffix ids), truncated to ``max_length`` (keeping the start)."""
        body = self._tok.encode(self.prompt(instruction), add_special_tokens=self.add_special_tokens).ids
        room = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        return [*self.prefix_ids, *body[:room], *self.suffix_ids]

    def batch(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``(input_ids, attention_mask)``, both (B, T) long, T the longest prompt."""
        enc = [self.encode(s) for s in instructions]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, width - len(e) :] = torch.tensor(e, dtype=torch.long)
            mask[i, width - len(e) :] = 1
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TOKENIZER_FILE
        self._tok.save(str(path))
        return path

    @classmethod
    def load(cls, directory: str | Path, max_length: int = 32, **kwargs) -> InstructionTokenizer:
        """Load ``instruction_tokenizer.json`` (``kwargs``: prompt_template, special_tokens, suffix_ids,
        normalization)."""
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: a policy directory needs its instruction tokenizer; "
                "re-save the policy with save_pretrained() or copy the file from the training run"
            )
        return cls(Tokenizer.from_file(str(path)), max_length=max_length, **kwargs)
