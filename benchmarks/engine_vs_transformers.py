"""Our sampling engine against `transformers`' `generate`, on the same weights, in one run.

Ours is the numpy engine (`gpt.engine.Engine` on `writing.bundle.load_model()`'s
`InferenceGPT`), what `persian-poetry generate` runs; theirs is PyTorch. The shipped model is
exported with `persian-poetry export-hf` from the PyTorch `GPT` of the same directory
(`gpt.checkpoint.load_model_dir`; the same numbers: the export's logits agree with ours and its
greedy decoding writes what our engine writes, tests/test_export_hf.py), and both decode from the
same 3-token header with the same sampling (temperature 0.8, top-k 50, top-p 0.95) for the same
number of new tokens, with no stop token. Batch 1 is our `Engine.stream` and
`Engine.generate_batch(B=1)`; batch B is `Engine.generate_batch`. The runs alternate (ours, theirs,
ours, ...) so that a busy CPU slows both alike; the median of the repeats is reported, as wall
clock and as process CPU time (which a busy CPU disturbs less). --threads sets both numpy's BLAS
threads (ours) and torch's (theirs).

    python benchmarks/engine_vs_transformers.py                 # batch 1 and 8, 200 new tokens, 1 thread
    python benchmarks/engine_vs_transformers.py --batches 1 --new-tokens 20 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from persian_poetry.assets import DEFAULT_MODEL_DIR
from persian_poetry.gpt.checkpoint import load_model_dir
from persian_poetry.gpt.engine import Engine, Sampling, new_generator
from persian_poetry.gpt.export_hf import export_hf
from persian_poetry.gpt.inference import one_blas_thread
from persian_poetry.writing.bundle import load_model


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    # No --int8 any more: it timed our engine on the torch int8-quantized model, and our engine now
    # runs the numpy InferenceGPT, which has no int8 form. Torch int8 (`load_model_dir(...,
    # quantize="int8")`) remains only for `persian-poetry evaluate --quantize int8` (bits/char), and
    # `generate --quantize` is gone; benchmarks/onnx_runtime.py times torch int8 decoding beside numpy.
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)  # transformers
    # numpy's BLAS (ours), for the whole process; one thread is what `generate` decodes on
    one_blas_thread() if args.threads == 1 else threadpool_limits(args.threads, user_api="blas")
    poetry = load_model(args.model)  # the numpy network our engine runs
    with tempfile.TemporaryDirectory() as tmp:  # the export reads the PyTorch GPT of the same directory
        export_hf(load_model_dir(args.model if args.model is not None else DEFAULT_MODEL_DIR), tmp)
        hf = AutoModelForCausalLM.from_pretrained(tmp, local_files_only=True).eval()
    engines = {"ours": Engine(poetry.model)}

    tok = poetry.tokenizer
    header = [tok.token_to_id(t) for t in ("<|poem|>", "<|poet:hafez|>", "<|form:ghazal|>")]
    sampling = Sampling(temperature=0.8, top_k=50, top_p=0.95)
    n = args.new_tokens

    def ours_stream(engine):
        tokens = list(engine.stream(header, 0, sampling, new_generator(1), n))
        assert len(tokens) == n

    def ours_batch(engine, b):
        rows = engine.generate_batch([header] * b, sampling, new_generator(1), n)
        assert len(rows) == b and len(rows[0]) == n

    def theirs(b):
        ids = torch.tensor([header] * b)
        torch.manual_seed(1)
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                              temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                              max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
        assert out.shape == (b, len(header) + n)

    cases: dict[str, tuple[int, callable]] = {}
    for b in args.batches:
        for name, engine in engines.items():
            if b == 1:
                cases[f"{name} stream, batch 1"] = (1, lambda e=engine: ours_stream(e))
            cases[f"{name} generate_batch, batch {b}"] = (b, lambda e=engine, b=b: ours_batch(e, b))
        cases[f"transformers generate, batch {b}"] = (b, lambda b=b: theirs(b))

    for _, fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for name, (_, fn) in cases.items():
            times[name].append(timed(fn))
    load_after = os.getloadavg()

    results = {}
    for name, (b, _) in cases.items():
        wall = statistics.median(t for t, _ in times[name])
        cpu = statistics.median(c for _, c in times[name])
        results[name] = {"batch": b, "tokens": b * n, "wall_s": wall, "cpu_s": cpu,
                         "tokens_per_s": b * n / wall, "tokens_per_cpu_s": b * n / cpu}
    print(f"ours: numpy {np.__version__}; theirs: torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{args.threads} thread(s), "
          f"{n} new tokens per row, median of {args.repeats}; load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"| {'run':42s} | tokens/s (wall) | tokens/s (CPU time) | ours / transformers (wall) | (CPU time) |")
    print(f"|{'-' * 44}|---:|---:|---:|---:|")
    for name, r in results.items():
        base = results[f"transformers generate, batch {r['batch']}"]
        print(f"| {name:42s} | {r['tokens_per_s']:,.0f} | {r['tokens_per_cpu_s']:,.0f} | "
              f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x | {r['tokens_per_cpu_s'] / base['tokens_per_cpu_s']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "new_tokens": n, "repeats": args.repeats,
                       "load_average": [load_before[0], load_after[0]], "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
