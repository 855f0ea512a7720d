"""How far a language model's likelihood goes as a judge of word order: real couplets against the
same couplets with their words shuffled (the tell-apart judge's first control), read by a model of
ours (--reader) that only scores them.

Each couplet, as `<|poem|> first <|hemi|> second <|beyt|>`, gets the reader's log-probability of each
token; seven statistics of those (per character, mean, spread, minimum, 10th and 25th percentiles,
tokens per character) feed a logistic regression trained on --train real and --train shuffled
train-split couplets and scored on --test of each from the test split (unpaired: each couplet on
its own, as the tell-apart judge sees them). Paired: how often a held-out real couplet is likelier per
character than its own shuffle. With --order-gain K, an eighth feature: the couplet's likelihood per
character minus the mean of K reorderings of its words (what its order adds). One BLAS thread.

    python benchmarks/tell_apart_likelihood.py --data ../shared/data/ganjoor/poems.jsonl.gz \\
        --reader src/persian_poetry/assets/default_model
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from persian_poetry.gpt.inference import one_blas_thread
from persian_poetry.judges import tell_apart as ta
from persian_poetry.writing.bundle import load_model


def likelihood_features(reader, couplets: list[str]) -> np.ndarray:
    tok = reader.tokenizer
    poem, hemi, beyt = (tok.token_to_id(t) for t in ("<|poem|>", "<|hemi|>", "<|beyt|>"))
    rows = []
    for couplet in couplets:
        first, second = couplet.split(ta.COUPLET_SEPARATOR)
        ids = [poem] + tok.encode(first) + [hemi] + tok.encode(second) + [beyt]
        logits, _ = reader.model.forward(np.array([ids]))
        logits = logits[0, :-1].astype(np.float64)
        logp = logits[np.arange(len(ids) - 1), ids[1:]] - np.logaddexp.reduce(logits, axis=-1)
        logp = logp[1:]  # the verse's first token follows the bare <|poem|>: no poet, form or metre given
        chars = len(first) + len(second) + 2
        rows.append([logp.sum() / chars, logp.mean(), logp.std(), logp.min(), np.percentile(logp, 10),
                     np.percentile(logp, 25), len(logp) / chars])
    return np.array(rows)


def logistic_accuracy(x_train, y_train, x_test, y_test, steps: int = 3000, lr: float = 0.1) -> float:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-9
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    w, b = np.zeros(x_train.shape[1]), 0.0
    for _ in range(steps):
        grad = 1.0 / (1.0 + np.exp(-(x_train @ w + b))) - y_train
        w -= lr * (x_train.T @ grad / len(y_train) + 1e-3 * w)
        b -= lr * grad.mean()
    return float((((x_test @ w + b) > 0) == y_test).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--reader", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--order-gain", type=int, default=0, metavar="K",
                        help="also: each couplet's likelihood per character minus the mean of K reorderings'")
    args = parser.parse_args()
    one_blas_thread()
    started = time.perf_counter()
    reader = load_model(args.reader)
    pools = ta.real_couplet_pools(args.data)
    train = ta.sample_couplets(pools["train"], args.train, ta.SEED)
    test = ta.sample_couplets(pools["test"], args.test, ta.SEED)
    real, shuffled = likelihood_features(reader, train), likelihood_features(reader, ta.shuffle_words(train, ta.SEED))
    real_test = likelihood_features(reader, test)
    shuffled_test = likelihood_features(reader, ta.shuffle_words(test, ta.SEED + 1))
    unpaired = logistic_accuracy(np.vstack([real, shuffled]), np.r_[np.zeros(len(real)), np.ones(len(shuffled))],
                                 np.vstack([real_test, shuffled_test]),
                                 np.r_[np.zeros(len(real_test)), np.ones(len(shuffled_test))])
    paired = float((real_test[:, 0] > shuffled_test[:, 0]).mean())
    print(f"reader {args.reader or 'shipped model'}: real vs shuffled, unpaired {unpaired:.3f}, "
          f"paired {paired:.3f} ({time.perf_counter() - started:.0f} s)")
    if args.order_gain:  # each couplet against its own reorderings: the likelihood its word order adds
        def gain(couplets: list[str], features: np.ndarray) -> np.ndarray:
            others = [likelihood_features(reader, ta.shuffle_words(couplets, ta.SEED + 10 + k))[:, :1]
                      for k in range(args.order_gain)]
            return np.hstack([features, features[:, :1] - np.mean(others, axis=0)])
        x_train = np.vstack([gain(train, real), gain(ta.shuffle_words(train, ta.SEED), shuffled)])
        x_test = np.vstack([gain(test, real_test), gain(ta.shuffle_words(test, ta.SEED + 1), shuffled_test)])
        y_train = np.r_[np.zeros(len(real)), np.ones(len(shuffled))]
        y_test = np.r_[np.zeros(len(real_test)), np.ones(len(shuffled_test))]
        print(f"with the order gain over {args.order_gain} reorderings: unpaired "
              f"{logistic_accuracy(x_train, y_train, x_test, y_test):.3f} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
