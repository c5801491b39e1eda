"""Word-level report tokenizer built on Hugging Face ``tokenizers``.

Radiology reports have a small, repetitive vocabulary, so the toolkit uses one
id per word (HF ``WordLevel`` model), trained on the training split's reports:

* normalizer: Unicode NFD, lower case, accents stripped (``"Café"`` -> ``"cafe"``);
* pre-tokenizer: split on whitespace, then every punctuation mark is its own
  token (``"effusion."`` -> ``"effusion"``, ``"."``; ``"x-ray"`` -> ``"x"``, ``"-"``, ``"ray"``);
* special tokens with fixed ids: ``[PAD]=0, [UNK]=1, [BOS]=2, [EOS]=3, [SEP]=4``.
  ``[SEP]`` written in the input text (the dataset joins report sections with
  ``" [SEP] "``) is matched before normalisation and becomes the single
  ``[SEP]`` token; it is case-sensitive, so ``"[sep]"`` is ordinary text.

The whole tokenizer (vocabulary and pipeline) is saved as one HF JSON file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD, UNK, BOS, EOS, SEP = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, SEP)  # position = id

# Detokenisation: no space before these, none after the opening ones, none around the joiners.
_ATTACH_LEFT = frozenset(".,;:!?)]}%")
_ATTACH_RIGHT = frozenset("([{")
_JOINERS = frozenset("-/'")


class ReportTokenizer:
    """Word-level tokenizer for report text (see module docstring for the pipeline)."""

    # The special tokens' fixed ids: their positions in SPECIAL_TOKENS (PAD, UNK, BOS, EOS, SEP; checked on load).
    pad_id, unk_id, bos_id, eos_id, sep_id = range(len(SPECIAL_TOKENS))

    def __init__(self, tokenizer: Tokenizer):
        self._check_special_ids(tokenizer)
        self._tokenizer = tokenizer
        self._special_ids = frozenset(range(len(SPECIAL_TOKENS)))

    # ------------------------------------------------------------------ building
    @classmethod
    def train(cls, texts: Iterable[str], min_freq: int = 2, max_vocab: int | None = None) -> ReportTokenizer:
        """Learn the vocabulary from ``texts`` (normally the training split's reports).

        Args:
            texts: report strings.
            min_freq: a word enters the vocabulary if it occurs at least this often.
            max_vocab: largest vocabulary size, the 5 special tokens included
                (the most frequent words are kept); ``None`` = no limit.
        """
        if max_vocab is not None and max_vocab < len(SPECIAL_TOKENS):
            raise ValueError(f"max_vocab must be at least {len(SPECIAL_TOKENS)} (the special tokens)")
        tokenizer = _empty_tokenizer()
        trainer = trainers.WordLevelTrainer(
            vocab_size=max_vocab if max_vocab is not None else 2**31 - 1,
            min_frequency=min_freq,
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        )
        tokenizer.train_from_iterator((t or "" for t in texts), trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReportTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as one JSON file (HF ``tokenizers`` format), through a temporary
        file and a rename: an interrupted save never leaves half a vocabulary."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            self._tokenizer.save(str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def to_json(self) -> str:
        """The tokenizer as JSON text (the content :meth:`save` writes; stored in checkpoints)."""
        return self._tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str) -> ReportTokenizer:
        """The tokenizer of :meth:`to_json` text (its special tokens checked)."""
        return cls(Tokenizer.from_str(text))

    # ------------------------------------------------------------------ encoding
    def encode(self, text: str, max_len: int, add_bos_eos: bool = False) -> list[int]:
        """Token ids of ``text``, at most ``max_len`` of them (no padding).

        With ``add_bos_eos`` the result is ``[BOS] words... [EOS]``; when the text
        is too long the words are truncated and ``[EOS]`` is still the last id.
        """
        budget = max_len - 2 if add_bos_eos else max_len
        if budget < 0:
            raise ValueError(f"max_len={max_len} leaves no room for [BOS] and [EOS]")
        ids = self._encoding(text).ids[:budget]
        return [self.bos_id, *ids, self.eos_id] if add_bos_eos else ids

    def tokenize(self, text: str, max_len: int | None = None) -> list[str]:
        """The words of ``text`` as the model receives them, aligned with :meth:`encode`.

        Same length and order as ``encode(text, max_len)`` (no BOS/EOS): one string
        per id, lower-cased and accent-stripped like the vocabulary. A word outside
        the vocabulary (id ``[UNK]``) is returned as its text, not as ``"[UNK]"``,
        so that word-attention displays show what the report said.
        """
        encoding = self._encoding(text)
        words = []
        for token_id, token, (start, end) in zip(encoding.ids, encoding.tokens, encoding.offsets):
            words.append(text[start:end].lower() if token_id == self.unk_id else token)
        return words if max_len is None else words[:max_len]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: stops at the first ``[EOS]``, skips the other special tokens.

        Words are joined by spaces with punctuation attached to its word:
        ``["no", "effusion", "."]`` -> ``"no effusion."``.
        """
        words = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id == self.eos_id:
                break
            if token_id in self._special_ids:
                continue
            token = self._tokenizer.id_to_token(token_id)
            if token is not None:
                words.append(token)
        return join_words(words)

    # ---------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        # Largest id + 1, not the count: the HF trainer leaves a gap when a training text contains a
        # special token verbatim (e.g. "[SEP]"), and embedding tables must cover every id.
        return max(self._tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(int(token_id))

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"ReportTokenizer(vocab_size={self.vocab_size})"

    # ------------------------------------------------------------------ internals
    def _encoding(self, text: str):
        return self._tokenizer.encode(text or "", add_special_tokens=False)

    @staticmethod
    def _check_special_ids(tokenizer: Tokenizer) -> None:
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            actual = tokenizer.token_to_id(token)
            if actual != expected_id:
                raise ValueError(
                    f"not a medmodal report tokenizer: special token {token} has id {actual}, "
                    f"expected {expected_id}"
                )


def _empty_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    # Registered before training so "[SEP]" in the training text is one token, not "[", "sep", "]".
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def join_words(words: Iterable[str]) -> str:
    """Join tokens into readable text: ``["no", "effusion", "."]`` -> ``"no effusion."``.

    No space before closing punctuation (``. , ; : ! ? ) ] } %``), none after an
    opening bracket, none around ``-``, ``/`` and ``'`` (``"x-ray"``, ``"patient's"``).
    """
    out: list[str] = []
    glue_next = True  # no space before the first word
    for word in words:
        attach = glue_next or word in _ATTACH_LEFT or word in _JOINERS
        out.append(word if attach else " " + word)
        glue_next = word in _ATTACH_RIGHT or word in _JOINERS
    return "".join(out)
