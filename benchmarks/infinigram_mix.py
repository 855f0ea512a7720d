"""Does mixing the model with an infini-gram over the train split lower bits/char?

Builds (or loads) the suffix array of the train split's tokens (the shipped model's tokenizer,
the classical poets), scores the model on three sets of poems with each scored token's n-gram
statistics (the same windows as `evaluate`), fits the mixture weight λ on one set and reports
bits/char on the other two:

  fit:    val poems [--limit, --limit + --fit)   where λ is chosen (EM)
  val:    val poems [0, --limit)                 reported
  test:   test poems [0, --limit)                reported, with λ from the fit set

λ schemes: one constant; one per match-length bucket; one per (match length, count) cell
(`infinigram.MixWeights`). With --write-mix the last scheme's table is written beside the index
(mix.json), for `persian-poetry evaluate --mix DIR`.

    python benchmarks/infinigram_mix.py --data ../shared/data/ganjoor/poems.jsonl.gz \\
        --index ~/.cache/persian-poetry/infinigram --limit 200 --fit 400
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from persian_poetry.assets import DEFAULT_MODEL_DIR
from persian_poetry.data.corpus import CLASSICAL_POETS
from persian_poetry.data.dataset import EncodedSplit, load_corpus_splits
from persian_poetry.files import sha256_of
from persian_poetry.gpt.checkpoint import TOKENIZER, load_model_dir
from persian_poetry.gpt.evaluate import target_scores
from persian_poetry.gpt.infinigram import (
    COUNT_EDGES,
    LENGTH_EDGES,
    META_FILE,
    InfiniGram,
    MixWeights,
    save_mix_weights,
    tokens_digest,
)


def rows(split: EncodedSplit, first: int, count: int) -> EncodedSplit:
    return EncodedSplit(split.tokens, split.index[first:first + count])


def index_for(train: EncodedSplit, directory: Path, tokenizer_sha: str) -> InfiniGram:
    digest = tokens_digest(train.tokens)
    if (directory / META_FILE).exists() and InfiniGram.meta(directory).get("tokens_sha256") == digest:
        return InfiniGram.load(directory)
    started = time.perf_counter()
    index = InfiniGram.from_split(train)
    print(f"suffix array of {index.n_tokens:,} train tokens built in {time.perf_counter() - started:.0f} s")
    index.save(directory, tokenizer_sha256=tokenizer_sha, source="train split, classical poets")
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the Ganjoor corpus (poems.jsonl.gz)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--index", default=str(Path.home() / ".cache" / "persian-poetry" / "infinigram"),
                        help="where the suffix array is cached (built when absent or stale)")
    parser.add_argument("--limit", type=int, default=200, help="val and test poems reported")
    parser.add_argument("--fit", type=int, default=400, help="val poems after those reported, to fit λ on")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write-mix", action="store_true",
                        help="write mix.json (the length x count table) into --index, for evaluate --mix")
    parser.add_argument("--json", default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model_dir = Path(args.model)
    loaded = load_model_dir(model_dir)  # the PyTorch GPT: bits/char as `evaluate` computes them
    tokenizer_sha = sha256_of(model_dir / TOKENIZER)
    corpus = load_corpus_splits(Path(args.data), loaded.tokenizer, CLASSICAL_POETS)
    index = index_for(corpus.splits["train"], Path(args.index), tokenizer_sha)
    val, test = corpus.splits["val"], corpus.splits["test"]
    sets = {"fit": rows(val, args.limit, args.fit), "val": rows(val, 0, args.limit), "test": rows(test, 0, args.limit)}
    scores = {}
    for name, split in sets.items():
        started = time.perf_counter()
        scores[name] = target_scores(loaded.model, split, index=index)
        n = scores[name].ngram[0]
        print(f"{name:5s} {split.n_poems} poems, {len(n):,} tokens scored in {time.perf_counter() - started:.0f} s; "
              f"match length median {np.median(n):.0f}, mean {n.mean():.2f}, longest {n.max()}, "
              f">= 16 tokens: {np.mean(n >= 16):.2%}")

    fit = scores["fit"]
    schemes = {
        "constant": MixWeights.fit(fit.model_logp, *fit.ngram, length_edges=(0,), count_edges=(1,)),
        "by length": MixWeights.fit(fit.model_logp, *fit.ngram, length_edges=LENGTH_EDGES, count_edges=(1,)),
        "by length x count": MixWeights.fit(fit.model_logp, *fit.ngram, length_edges=LENGTH_EDGES,
                                            count_edges=COUNT_EDGES),
    }
    figures = {"model alone": {name: s.result().bits_per_char for name, s in scores.items()}}
    for scheme, weights in schemes.items():
        figures[f"mixed, λ {scheme}"] = {name: s.result(weights).bits_per_char for name, s in scores.items()}
    print(f"\nbits/char (fit: {args.fit} val poems after the first {args.limit}; val, test: the first {args.limit})")
    print(f"{'':28s}{'fit':>8s}{'val':>8s}{'test':>8s}")
    for label, row in figures.items():
        print(f"{label:28s}" + "".join(f"{row[k]:8.4f}" for k in ("fit", "val", "test")))
    chosen = schemes["by length x count"]
    for name, s in scores.items():  # how much of the gain comes from long matches (verses the train split repeats)
        n = s.ngram[0]
        saved = (chosen.log_prob(s.model_logp, *s.ngram) - s.model_logp) / np.log(2) / s.characters
        print(f"{name}: of the {saved.sum():.4f} bits/char saved, {saved[n >= 16].sum():.4f} on tokens with a match "
              f"of >= 16 tokens, {saved[n < 8].sum():.4f} on those with a match under 8")
    print(f"\nconstant λ = {schemes['constant'].lambdas[0, 0]:.4f}")
    by_length = schemes["by length"]
    print("λ by match length: " + ", ".join(f"{e}+: {lam:.3f}" for e, lam in zip(by_length.length_edges,
                                                                                 by_length.lambdas[:, 0], strict=True)))
    if args.write_mix:
        path = save_mix_weights(args.index, chosen, fitted_on=f"val poems {args.limit}.."
                                f"{args.limit + args.fit - 1}", model_tokenizer_sha256=tokenizer_sha)
        print(f"mixture weights written to {path}")
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "lambdas": {k: w.to_dict() for k, w in
                                                                              schemes.items()}}, indent=1))


if __name__ == "__main__":
    main()
