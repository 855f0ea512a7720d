"""Training throughput and model FLOP utilisation (MFU) on this machine, and the step loop's memory.

The step is `train.py`'s: forward, cross-entropy, backward, gradient clipping, AdamW (betas 0.9,
0.95, weight decay on matrices), on the shipped model's architecture and the default preset's batch
(24 x 256 tokens). The batches are random token ids: the arithmetic does not depend on the text,
and the script needs no corpus.

FLOPs per token follow the PaLM appendix / nanoGPT's `estimate_mfu`: 6 N for the parameter matmuls
(forward 2N, backward 4N; N counts the tied embedding once, for the output layer's matmul) plus
12 L C T for attention scores and their weighting (L layers, C width, T context). The peak is
measured here, not taken from a data sheet: the best float32 `torch.mm` rate of large square
matrices with the same thread count. MFU = tokens/s x FLOPs/token / peak.

    python benchmarks/train_throughput.py                 # 1 thread (how the shipped model was trained)
    python benchmarks/train_throughput.py --threads 2
    python benchmarks/train_throughput.py --threads 2 --preset notebook --attention-dropout 0.1   # its old setting
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from persian_poetry.data.tokenizer import CharTokenizer
from persian_poetry.gpt.config import PRESETS, config_with_preset
from persian_poetry.gpt.model import GPT, POSITIONAL_KINDS, GPTConfig


def peak_matmul_flops(size: int, repeats: int) -> float:
    """Best float32 matmul FLOP/s of two (size, size) matrices."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--preset", choices=list(PRESETS), default="default", help="architecture, batch and dropout")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--dropout", type=float, default=None, help="default: the preset's")
    ap.add_argument("--attention-dropout", type=float, default=None, help="default: the preset's")
    ap.add_argument("--positional", choices=POSITIONAL_KINDS, default=None, help="default: the preset's")
    ap.add_argument("--matmul-size", type=int, default=2048)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = config_with_preset(args.preset, batch_size=args.batch_size, dropout=args.dropout,
                             attention_dropout=args.attention_dropout, positional=args.positional)
    # The notebook's text is read with the plain character tokenizer (as `train.load_data` does); the
    # default model's BPE has 4,096 tokens.
    vocab_size = CharTokenizer([]).vocab_size if cfg.tokenizer == "char" else 4096
    config = GPTConfig(vocab_size=vocab_size, context_length=cfg.context_length,
                       n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout,
                       attention_dropout=cfg.attention_dropout, positional=cfg.positional)
    model = GPT(config)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.95))
    B, T = cfg.batch_size, config.context_length

    def step() -> None:
        x = torch.randint(0, config.vocab_size, (B, T))
        y = torch.randint(0, config.vocab_size, (B, T))
        _, loss, _ = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    load_before = os.getloadavg()[0]
    peak_before = peak_matmul_flops(args.matmul_size, 5)
    for _ in range(2):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak_after = peak_matmul_flops(args.matmul_size, 5)
    peak = max(peak_before, peak_after)

    n_params = model.num_parameters()
    flops_per_token = 6 * n_params + 12 * config.n_layer * config.n_embd * T
    median = sorted(times)[len(times) // 2]
    tokens_per_s = B * T / median
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"model: {n_params / 1e6:.2f} M parameters ({config.n_layer} layers, {config.n_head} heads, "
          f"{config.n_embd} wide, context {T}), batch {B} x {T} = {B * T} tokens a step, "
          f"dropout {config.dropout}, attention dropout {config.attention_dropout}, {config.positional} positions")
    print(f"peak float32 matmul ({args.matmul_size}x{args.matmul_size}): {peak / 1e9:.1f} GFLOP/s "
          f"(before {peak_before / 1e9:.1f}, after {peak_after / 1e9:.1f})")
    print(f"training: median step {median:.2f} s over {args.steps} steps -> {tokens_per_s:,.0f} tokens/s; "
          f"{flops_per_token / 1e6:.1f} MFLOP/token -> {tokens_per_s * flops_per_token / 1e9:.1f} GFLOP/s, "
          f"MFU {tokens_per_s * flops_per_token / peak:.1%}")
    print(f"peak RSS of this process (model, AdamW state, activations, torch): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
