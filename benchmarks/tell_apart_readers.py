"""Language models of ours as readers for the tell-apart judge: what they give on its first control.

The control: real couplets against the same couplets with their words shuffled within each
hemistich, each couplet judged on its own (unpaired). A reader GPT (--reader, a model directory)
reads `<|poem|> first <|hemi|> second <|beyt|>`; two ways of turning it into a judge:

- frozen: its final hidden states (mean, max and spread over the tokens) and seven statistics of
  its per-token log-probabilities feed a logistic regression (AdamW, 2,000 full-batch steps);
- fine-tuned: the whole network with a linear head on the mean and the last hidden state and the
  mean log-probability, --steps steps of batch 32 (AdamW, 1e-4 for the network, 1e-3 for the head).

Both train on --train real and --train shuffled train-split couplets and are scored on --test of
each from the test split. Two torch threads.

    python benchmarks/tell_apart_readers.py --data ../shared/data/ganjoor/poems.jsonl.gz \\
        --reader DIR --way frozen --train 2000 --test 500
    python benchmarks/tell_apart_readers.py --data ../shared/data/ganjoor/poems.jsonl.gz \\
        --reader DIR --way fine-tuned --train 20000 --test 500 --steps 1000
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from persian_poetry.gpt.checkpoint import load_model_dir
from persian_poetry.judges import tell_apart as ta


class ReaderJudge(torch.nn.Module):
    """A reader GPT and a linear head over its hidden states and log-probabilities."""

    def __init__(self, directory: str):
        super().__init__()
        loaded = load_model_dir(directory)
        self.gpt, self.tok = loaded.model, loaded.tokenizer
        self.marks = [self.tok.token_to_id(t) for t in ("<|poem|>", "<|hemi|>", "<|beyt|>")]
        self.hidden = {}
        self.gpt.ln_f.register_forward_hook(lambda module, inputs, output: self.hidden.__setitem__("h", output))
        self.head = torch.nn.Linear(2 * self.gpt.config.n_embd + 1, 1)

    def ids(self, couplet: str) -> list[int]:
        poem, hemi, beyt = self.marks
        first, second = couplet.split(ta.COUPLET_SEPARATOR)
        return [poem] + self.tok.encode(first) + [hemi] + self.tok.encode(second) + [beyt]

    def read(self, seqs: list[list[int]]):
        """(hidden states (B, T, C), token log-probabilities (B, T-1), mask (B, T)) of padded rows."""
        width = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
        mask = torch.arange(width)[None, :] < torch.tensor([len(s) for s in seqs])[:, None]
        logits = self.gpt(ids)[0]
        logp = torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
        return self.hidden["h"], logp, mask

    def forward(self, seqs: list[list[int]]) -> torch.Tensor:
        h, logp, mask = self.read(seqs)
        lengths = mask.sum(1)
        m = mask.float()
        mean_logp = (logp * m[:, 1:]).sum(1) / (lengths - 1)
        mean = (h * m[..., None]).sum(1) / lengths[:, None]
        last = h[torch.arange(len(seqs)), lengths - 1]
        return self.head(torch.cat([mean, last, mean_logp[:, None] / 5], -1))[:, 0]


@torch.no_grad()
def frozen_features(judge: ReaderJudge, couplets: list[str]) -> np.ndarray:
    rows = []
    for start in range(0, len(couplets), 64):
        batch = couplets[start:start + 64]
        seqs = [judge.ids(c) for c in batch]
        h, logp, _ = judge.read(seqs)
        for j, seq in enumerate(seqs):
            states, lp = h[j, 1:len(seq)].numpy(), logp[j, 1:len(seq) - 1].numpy()
            chars = len(batch[j])
            rows.append(np.concatenate([states.mean(0), states.max(0), states.std(0),
                                        [lp.sum() / chars, lp.mean(), lp.std(), lp.min(), np.percentile(lp, 10),
                                         np.percentile(lp, 25), len(lp) / chars]]))
    return np.array(rows, dtype=np.float32)


def logistic(x_train, y_train, x_test, y_test, steps: int = 2000) -> float:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = torch.tensor((x_train - mean) / std), torch.tensor((x_test - mean) / std)
    torch.manual_seed(0)
    net = torch.nn.Linear(x_train.shape[1], 1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-3)
    target = torch.tensor(y_train, dtype=torch.float32)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x_train)[:, 0], target).backward()
        optimizer.step()
    with torch.no_grad():
        return float(((net(x_test)[:, 0] > 0).numpy() == y_test).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--reader", required=True, help="model directory of the reader GPT")
    parser.add_argument("--way", choices=["frozen", "fine-tuned"], default="frozen")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--steps", type=int, default=1000, help="fine-tuning steps (batch 32)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    started = time.perf_counter()
    pools = ta.real_couplet_pools(args.data)
    train = ta.sample_couplets(pools["train"], args.train, ta.SEED)
    test = ta.sample_couplets(pools["test"], args.test, ta.SEED + 1)
    x_train, x_test = train + ta.shuffle_words(train, ta.SEED), test + ta.shuffle_words(test, ta.SEED + 1)
    y_train, y_test = np.r_[np.zeros(len(train)), np.ones(len(train))], np.r_[np.zeros(len(test)), np.ones(len(test))]
    judge = ReaderJudge(args.reader)
    if args.way == "frozen":
        judge.gpt.eval()
        accuracy = logistic(frozen_features(judge, x_train), y_train, frozen_features(judge, x_test), y_test)
    else:
        seqs, test_seqs = [judge.ids(c) for c in x_train], [judge.ids(c) for c in x_test]
        optimizer = torch.optim.AdamW([{"params": judge.gpt.parameters(), "lr": 1e-4},
                                       {"params": judge.head.parameters(), "lr": 1e-3}], weight_decay=0.01)
        rng = random.Random(0)
        judge.gpt.train()
        for step in range(1, args.steps + 1):
            batch = rng.sample(range(len(seqs)), 32)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                judge([seqs[i] for i in batch]), torch.tensor(y_train[batch], dtype=torch.float32))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 250 == 0:
                print(f"step {step}: loss {loss.item():.3f}", flush=True)
        judge.gpt.eval()
        with torch.no_grad():
            scores = torch.cat([judge(test_seqs[i:i + 128]) for i in range(0, len(test_seqs), 128)]).numpy()
        accuracy = float(((scores > 0) == y_test).mean())
    print(f"reader {args.reader}, {args.way}: real vs shuffled, unpaired {accuracy:.3f} "
          f"({args.train} + {args.train} train, {args.test} + {args.test} held out; "
          f"{time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
