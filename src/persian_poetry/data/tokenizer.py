"""Tokenizers: text <-> token ids, with the control header's special tokens in both.

Two kinds share one interface (`encode`, `decode`, `token_to_id`, `save`, `load_tokenizer`):

* `CharTokenizer`: one id per character of the normalized alphabet (`text.ALPHABET`). Needs no
  training; the vocabulary is fixed by the alphabet and the special tokens.
* `BPETokenizer`: byte-level BPE trained with Hugging Face `tokenizers`. Its pre-tokenizer keeps
  combining marks (kasra, tashdid, hamza) and ZWNJ inside words; GPT-2's `\\p{L}+` pattern would
  split them off (بویِ -> بوی + ِ) and waste merges.

Both normalize before encoding, so `decode(encode(x)) == normalize(x)` for any one-line string
x; text with line breaks keeps them, each line normalized and empty lines dropped.
Special tokens never come out of `encode` of user text (their characters are outside the
alphabet); they are inserted by id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Protocol

import tokenizers
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

from ..errors import TokenizerError
from ..text import ALPHABET, normalize
from .controls import Controls
from .corpus import read_jsonl, read_plain_text

# Keeps \p{M} and ZWNJ in words; digits and punctuation runs on their own; spaces lead words.
BPE_SPLIT_PATTERN = r" ?[\p{L}\p{M}\u200c]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}\u200c]+|\s+"


class Tokenizer(Protocol):
    kind: str
    special_tokens: list[str]

    @property
    def vocab_size(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def token_to_id(self, token: str) -> int: ...
    def id_to_token(self, token_id: int) -> str: ...
    def save(self, path: str | Path) -> None: ...
    def is_special(self, token_id: int) -> bool: ...
    @property
    def pieces(self) -> tuple[str, ...]: ...

class _SpecialsMixin:
    special_tokens: list[str]
    _special_ids: dict[str, int]
    _special_id_set: set[int]

    def token_to_id(self, token: str) -> int:
        try:
            return self._special_ids[token]
        except KeyError:
            raise TokenizerError(f"token {token!r} is not a special token of this tokenizer") from None

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_id_set

    @cached_property
    def pieces(self) -> tuple[str, ...]:
        """The text of every token id, in order (`id_to_token` of each), read once: the writer
        classifies the whole vocabulary by it."""
        return tuple(self.id_to_token(i) for i in range(self.vocab_size))


class CharTokenizer(_SpecialsMixin):
    """One token per character; ids 0..len(specials)-1 are the special tokens."""

    kind = "char"

    def __init__(self, special_tokens: Iterable[str]):
        self.special_tokens = list(special_tokens)
        self.chars = sorted(ALPHABET | {"\n"})
        self._itos = self.special_tokens + self.chars
        self._stoi = {ch: i for i, ch in enumerate(self.chars, start=len(self.special_tokens))}
        self._special_ids = {tok: i for i, tok in enumerate(self.special_tokens)}
        self._special_id_set = set(self._special_ids.values())

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode(self, text: str) -> list[int]:
        # Lines are kept (the notebook's corpus is one hemistich a line); each is normalized.
        text = "\n".join(filter(None, map(normalize, text.split("\n")))) if "\n" in text else normalize(text)
        return [self._stoi[ch] for ch in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self._itos[i] for i in ids)

    def id_to_token(self, token_id: int) -> str:
        return self._itos[token_id]

    def save(self, path: str | Path) -> None:
        data = {"type": "char", "special_tokens": self.special_tokens, "chars": self.chars}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


class BPETokenizer(_SpecialsMixin):
    """Byte-level BPE from Hugging Face `tokenizers`; the special tokens take the first ids."""

    kind = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        # User text must never be read as a special token (not that normalized text could hold one).
        self.hf.encode_special_tokens = True
        added = sorted((t.content, i) for i, t in self.hf.get_added_tokens_decoder().items() if t.special)
        self.special_tokens = [tok for tok, _ in sorted(added, key=lambda x: x[1])]
        self._special_ids = dict(added)
        self._special_id_set = set(self._special_ids.values())

    @classmethod
    def train(cls, texts: Iterator[str] | Iterable[str], vocab_size: int, special_tokens: list[str],
              show_progress: bool = True) -> "BPETokenizer":
        hf = tokenizers.Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(BPE_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
        hf.train_from_iterator((normalize(t) for t in texts), trainer=trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        text = "\n".join(filter(None, map(normalize, text.split("\n")))) if "\n" in text else normalize(text)
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode already-normalized texts in parallel (the corpus cache uses this)."""
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def id_to_token(self, token_id: int) -> str:
        if token_id in self._special_id_set:
            return self.hf.id_to_token(token_id)
        return self.hf.decode([token_id])

    def save(self, path: str | Path) -> None:
        # Written by Python, not `hf.save`: a bad path is then an OSError that names it, not a
        # bare Exception from Rust. Same bytes.
        Path(path).write_text(self.hf.to_str(pretty=True), encoding="utf-8")


def load_tokenizer(path: str | Path) -> CharTokenizer | BPETokenizer:
    """Load a tokenizer JSON written by `save` (either kind)."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer file not found: {path}") from None
    except OSError as err:  # a directory, no permission
        raise TokenizerError(f"cannot read tokenizer file {path}: {err}") from None
    return parse_tokenizer(content, path)


def parse_tokenizer(content: bytes, path: str | Path) -> CharTokenizer | BPETokenizer:
    """A tokenizer from the bytes of its JSON file (`path` only names it in errors)."""
    try:
        text = content.decode("utf-8")
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TokenizerError(f"tokenizer file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} is neither a char nor a BPE tokenizer file")
    if data.get("type") == "char":
        specials = data.get("special_tokens")
        if not isinstance(specials, list) or not all(isinstance(t, str) for t in specials):
            raise TokenizerError(f"char tokenizer file {path} has no list of special tokens")
        tokenizer = CharTokenizer(specials)
        if data.get("chars", tokenizer.chars) != tokenizer.chars:  # ids would mean other letters
            raise TokenizerError(f"char tokenizer file {path} was made for another alphabet than this version's")
        return tokenizer
    if isinstance(data.get("model"), dict) and data["model"].get("type") == "BPE":
        try:
            hf = tokenizers.Tokenizer.from_str(text)  # the text as read; no need to dump `data` again
        except Exception as err:  # tokenizers raises a bare Exception for a damaged file
            raise TokenizerError(f"BPE tokenizer file {path} is damaged: {err}") from None
        return BPETokenizer(hf)
    raise TokenizerError(f"{path} is neither a char nor a BPE tokenizer file")


def train_tokenizer(data: str | Path, kind: str = "bpe", vocab_size: int = 4096, poets: Iterable[str] | None = None,
                    max_chars: int = 30_000_000, progress: bool = True) -> CharTokenizer | BPETokenizer:
    """Build a tokenizer for a Ganjoor-schema corpus: its controls become special tokens, and (for
    BPE) the merges are learned from up to `max_chars` characters of train-split verse.

    For a plain .txt (the notebook's corpus) there are no controls, and BPE learns only from the
    first 90% of the text, the part `train` trains on, so the val part stays unseen."""

    if kind not in ("char", "bpe"):
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose from: char, bpe")
    if Path(data).suffix == ".txt":
        text = read_plain_text(data)
        train_part = text[:int(len(text) * 0.9)][:max_chars]
        if kind == "char":
            return CharTokenizer([])
        return BPETokenizer.train(train_part.splitlines(), vocab_size, [], show_progress=progress)
    poems = [p for p in read_jsonl(data, poets)]
    if not poems:
        raise TokenizerError(f"no poems found in {data}" + (" for the selected poets" if poets else ""))
    specials = Controls.from_poems(poems).special_tokens()
    if kind == "char":
        return CharTokenizer(specials)
    texts, total = [], 0
    for poem in poems:
        if poem.split != "train":
            continue
        texts.extend(poem.hemistichs)
        total += sum(len(h) for h in poem.hemistichs)
        if total >= max_chars:
            break
    return BPETokenizer.train(texts, vocab_size, specials, show_progress=progress)
