"""Poems as token ids: encoding a corpus once into numpy memmaps, and cutting training windows.

A split is stored as two arrays: `tokens` (every poem's header and body, one after another) and
`index` (one row per poem: start offset, header length, body length, body characters). The
cache key hashes the corpus file's bytes, the poet selection and the tokenizer, so a second run
with the same inputs maps the arrays in seconds and a changed input rebuilds them.

Such a folder is also a corpus of its own (`prepare_corpus`, the `prepare-data` command): it holds
everything training reads, so a machine without the corpus file (a rented GPU, each rank of a
multi-machine run) trains from the folder alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from ..files import cache_root, sha256_of
from .controls import BEYT, END, HEMI, Controls, poem_header
from .corpus import SPLITS, Poem, read_jsonl
from .tokenizer import BPETokenizer, CharTokenizer, load_tokenizer

CACHE_VERSION = 3  # 2: the cache also holds tokenizer.json and metres.json; 3: and poets.json
START, HEADER, BODY_LEN, CHARS = range(4)  # columns of `index`


def body_chars(poem: Poem) -> int:
    """Characters scored for bits/char: the hemistichs' normalized text plus one per separator
    (each hemistich is followed by exactly one of <|hemi|>, <|beyt|>, <|end|>)."""
    return sum(len(h) for h in poem.hemistichs) + len(poem.hemistichs)


def encode_poem(poem: Poem, tokenizer, controls: Controls, hemistich_ids: list[list[int]] | None = None):
    """(header ids, body ids) of a poem; `hemistich_ids` saves re-encoding when batch-encoded."""
    header = poem_header(controls, poem.poet, poem.form, poem.metre, poem.rhyme).ids(tokenizer)
    if hemistich_ids is None:
        hemistich_ids = [tokenizer.encode(h) for h in poem.hemistichs]
    hemi, beyt, end = (tokenizer.token_to_id(t) for t in (HEMI, BEYT, END))
    body: list[int] = []
    for i, (ids, closes_couplet) in enumerate(zip(hemistich_ids, poem.couplet_ends, strict=True)):
        body += ids
        body.append(end if i == len(hemistich_ids) - 1 else beyt if closes_couplet else hemi)
    return header, body


@dataclass
class EncodedSplit:
    """Token ids of one split and the per-poem index; arrays may be memmaps."""

    tokens: np.ndarray
    index: np.ndarray

    @property
    def n_poems(self) -> int:
        return len(self.index)

    @property
    def n_chars(self) -> int:
        return int(self.index[:, CHARS].sum())

    def poem(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(header ids, body ids, body characters) of poem i."""
        start, header, body, chars = (int(v) for v in self.index[i])
        return (self.tokens[start:start + header], self.tokens[start + header:start + header + body], chars)

    def sample_batch(self, rng: np.random.Generator, batch_size: int, context: int):
        """Random windows of `context` tokens: (inputs, targets) int64 arrays of shape (B, T).

        A window that starts inside a poem's body gets that poem's header put back in front, so
        the model always knows whose verse, in which form and metre, it is continuing. Targets
        inside the re-inserted header are -1 (not scored): they are not a prediction task there.
        """
        n = len(self.tokens)
        if n < context + 2:
            raise ValueError(f"split has {n} tokens, fewer than one window of {context + 1}")
        starts = self.index[:, START]
        x = np.empty((batch_size, context), dtype=np.int64)
        y = np.empty((batch_size, context), dtype=np.int64)
        for b, pos in enumerate(rng.integers(0, n - context - 1, size=batch_size)):
            i = int(np.searchsorted(starts, pos, side="right")) - 1
            start, header = int(starts[i]), int(self.index[i, HEADER])
            if header == 0 or pos - start < header:
                pos = start if header else pos  # a window never starts inside a header
                window = self.tokens[pos:pos + context + 1]
                skip = 0
            else:
                body = self.tokens[pos:pos + context + 1 - header]
                window = np.concatenate([self.tokens[start:start + header], body])
                skip = header - 1
            x[b] = window[:-1]
            y[b] = window[1:]
            y[b, :skip] = -1
        return x, y


def encode_poems(poems: list[Poem], tokenizer, controls: Controls) -> EncodedSplit:
    texts = [h for poem in poems for h in poem.hemistichs]
    if hasattr(tokenizer, "encode_batch"):
        flat = tokenizer.encode_batch(texts)
    else:
        flat = [tokenizer.encode(t) for t in texts]
    tokens: list[int] = []
    index = np.zeros((len(poems), 4), dtype=np.int64)
    k = 0
    for i, poem in enumerate(poems):
        header, body = encode_poem(poem, tokenizer, controls, flat[k:k + len(poem.hemistichs)])
        k += len(poem.hemistichs)
        index[i] = (len(tokens), len(header), len(body), body_chars(poem))
        tokens += header
        tokens += body
    dtype = np.uint16 if tokenizer.vocab_size <= 65535 else np.uint32
    return EncodedSplit(np.asarray(tokens, dtype=dtype), index)


def split_plain_text(text: str, tokenizer, train_fraction: float = 0.9) -> dict[str, EncodedSplit]:
    """The notebook's way: one long text, the first 90% of characters train, the rest val.

    No headers; each split is one "poem" whose characters are every character of it (counted as
    characters, not tokens, so char and BPE models are scored alike).
    """
    cut = int(len(text) * train_fraction)
    out = {}
    for name, part in (("train", text[:cut]), ("val", text[cut:])):
        ids = np.asarray(tokenizer.encode(part), dtype=np.uint16)
        chars = len(tokenizer.decode(ids.tolist()))  # the characters scored: the text as normalized
        out[name] = EncodedSplit(ids, np.array([[0, 0, len(ids), chars]], dtype=np.int64))
    return out


class EncodedCorpus(NamedTuple):
    splits: dict[str, EncodedSplit]
    data_hash: str  # sha256 of the corpus file
    tokenizer: CharTokenizer | BPETokenizer
    metres: dict[int, str]  # Ganjoor metre id -> its name, for the poems read
    poets: list[str] | None = None  # the poets encoded (None: every poet of the corpus)


def _tokenizer_digest(tokenizer) -> str:
    if tokenizer == "char":
        material = "char"  # fully determined by the corpus and the poets
    else:
        material = json.dumps(tokenizer.special_tokens) + tokenizer.kind + str(tokenizer.vocab_size)
        if tokenizer.kind == "bpe":
            material += tokenizer.hf.to_str()
    return hashlib.sha256(material.encode()).hexdigest()


def same_tokenizer(a: CharTokenizer | BPETokenizer, b: CharTokenizer | BPETokenizer) -> bool:
    return _tokenizer_digest(a) == _tokenizer_digest(b)


def _cache_key(data_hash: str, poets: list[str] | None, tokenizer) -> str:
    material = json.dumps([CACHE_VERSION, data_hash, sorted(poets) if poets is not None else None,
                           _tokenizer_digest(tokenizer)])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def is_prepared_corpus(path: str | Path) -> bool:
    """Whether `path` is a folder written by `prepare_corpus` (or the training cache)."""
    return (Path(path) / "done").is_file()


def read_prepared_corpus(folder: str | Path) -> EncodedCorpus:
    """The encoded corpus in `folder`, its token arrays mapped rather than read."""
    folder = Path(folder)
    if not is_prepared_corpus(folder):
        raise FileNotFoundError(f"not a prepared corpus (no 'done' file): {folder}")
    splits = {s: EncodedSplit(np.load(folder / f"{s}.tokens.npy", mmap_mode="r"),
                              np.load(folder / f"{s}.index.npy")) for s in SPLITS}
    metres = {int(k): v for k, v in json.loads((folder / "metres.json").read_text(encoding="utf-8")).items()}
    poets = json.loads((folder / "poets.json").read_text(encoding="utf-8"))
    return EncodedCorpus(splits, (folder / "done").read_text().strip(), load_tokenizer(folder / "tokenizer.json"),
                         metres, poets)


def prepare_corpus(data_path: str | Path, tokenizer: CharTokenizer | BPETokenizer | str,
                   poets: Iterable[str] | None, folder: str | Path, progress: bool = True,
                   data_hash: str | None = None) -> EncodedCorpus:
    """Encode a Ganjoor-schema JSONL corpus into `folder`: each split's tokens and index (.npy), the
    tokenizer, the metre names, the poets, and last a `done` file holding the corpus's sha256."""
    data_path, folder = Path(data_path), Path(folder)
    if not data_path.is_file():
        raise FileNotFoundError(f"corpus file not found: {data_path}")
    poets = list(poets) if poets is not None else None
    data_hash = data_hash or sha256_of(data_path)
    by_split: dict[str, list[Poem]] = {s: [] for s in SPLITS}
    metres: dict[int, str] = {}
    for poem in tqdm(read_jsonl(data_path, poets), desc="reading poems", unit=" poems", disable=not progress,
                     mininterval=2):
        by_split[poem.split].append(poem)
        if poem.metre is not None and poem.metre_name:
            metres.setdefault(poem.metre, poem.metre_name)
    if tokenizer == "char":
        tokenizer = CharTokenizer(Controls.from_poems(p for ps in by_split.values() for p in ps).special_tokens())
    controls = Controls.from_special_tokens(tokenizer.special_tokens)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "done").unlink(missing_ok=True)  # a folder written over is no corpus until it is whole again
    splits = {}
    for name, poems in by_split.items():
        splits[name] = encode_poems(poems, tokenizer, controls)
        for suffix, array in (("tokens", splits[name].tokens), ("index", splits[name].index)):
            tmp = folder / f"{name}.{suffix}.{os.getpid()}.tmp.npy"  # one writer's own temp file
            np.save(tmp, array)
            os.replace(tmp, folder / f"{name}.{suffix}.npy")
    tokenizer.save(folder / "tokenizer.json")
    (folder / "metres.json").write_text(json.dumps({str(k): v for k, v in sorted(metres.items())},
                                                   ensure_ascii=False), encoding="utf-8")
    (folder / "poets.json").write_text(json.dumps(poets), encoding="utf-8")
    (folder / "done").write_text(data_hash)
    return EncodedCorpus(splits, data_hash, tokenizer, metres, poets)


def load_corpus_splits(data_path: str | Path, tokenizer: CharTokenizer | BPETokenizer | str,
                       poets: Iterable[str] | None = None, cache_dir: str | Path | None = None,
                       progress: bool = True) -> EncodedCorpus:
    """Encode a Ganjoor-schema JSONL corpus into train/val/test splits, cached as .npy memmaps.

    `tokenizer` is a tokenizer, or "char" for a character tokenizer whose special tokens are the
    controls found in the corpus (stored with the cache, so a second run needs no corpus pass).
    """
    data_path = Path(data_path)
    if not data_path.exists():
        raise FileNotFoundError(f"corpus file not found: {data_path}")
    poets = list(poets) if poets is not None else None  # read twice (key, then poems): not a one-shot iterator
    data_hash = sha256_of(data_path)
    folder = Path(cache_dir or cache_root()) / _cache_key(data_hash, poets, tokenizer)
    if is_prepared_corpus(folder):
        corpus = read_prepared_corpus(folder)
        # the caller's own tokenizer object (the cached copy is equal to it by the key)
        return corpus if tokenizer == "char" else corpus._replace(tokenizer=tokenizer)
    return prepare_corpus(data_path, tokenizer, poets, folder, progress, data_hash)
