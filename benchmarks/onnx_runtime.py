"""ONNX Runtime against our torch decoding engine (and the numpy one, if present) on the same GPT.

The decoding step is exported to ONNX with an explicit KV cache: a small wrapper module whose
inputs are the new token ids (B, 1), the position of that token (int64, shape (1,)) and the past
keys and values of every layer, (layers, B, H, past_len, D) each with `past_len` (and B) dynamic,
and whose outputs are the logits (B, vocab) and this token's keys and values (layers, B, H, 1, D).
The caller keeps the cache and appends them, which is how our Decoder manages its own. There is no
prefill graph: ORT reads the prompt through the same decode-step graph, one token at a time (torch
and numpy prefill in one `forward` call); prefill is timed apart and not in the tokens/s.

What it measures, for the shipped model and for a model of the new config (rotary, RMSNorm, ReLU²,
QK-norm; random init unless --new-weights gives a training checkpoint):

  * correctness: the max |logit difference| of ORT (float32) against torch `decode_step` over a
    real 100-token sequence (the famous couplets of tests/conftest.py, Hafez first, as hemistichs
    with their separator tokens), and the same for ORT int8 (`quantize_dynamic`, QInt8 weights),
    torch int8 (`quantize_int8`) and the numpy `InferenceGPT` if it imports;
  * speed: tokens/s decoding 200 tokens (greedy) after a 20-token prompt, batch 1 and 8, one
    thread (and two threads at batch 8 for torch and ORT), median of 5 repetitions, the runtimes
    alternating within each repetition so that a busy CPU slows all alike;
  * footprint: `python -c "import onnxruntime"` vs `import torch` wall time and max RSS (median
    of 5, /usr/bin/time), and the installed size of onnxruntime and torch with their dependencies.

    python benchmarks/onnx_runtime.py --out /tmp/onnx_runtime.json
    python benchmarks/onnx_runtime.py --out r.json --new-weights /root/runs/canon/checkpoint.pt
    python benchmarks/onnx_runtime.py --out r.json --repeats 1 --skip-footprint   # quick look

Needs `pip install onnxruntime onnx onnxscript` (onnx and onnxscript only for the export).
"""

from __future__ import annotations

import os

# The numpy engine's matrix products run single-threaded, like the others' 1-thread rows (set
# before numpy is first imported; it cannot be changed later without threadpoolctl).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import copy
import importlib.metadata as md
import json
import math
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from persian_poetry.assets import DEFAULT_MODEL_DIR
from persian_poetry.gpt.checkpoint import load_model_dir, quantize_int8
from persian_poetry.gpt.model import GPT, GPTConfig, KVCache, _activation

try:  # being written elsewhere; included when it exists and imports
    from persian_poetry.gpt.inference import InferenceGPT
    NUMPY_IMPORT_ERROR = None
except Exception as err:  # noqa: BLE001 (ImportError, or a half-written file)
    InferenceGPT = None
    NUMPY_IMPORT_ERROR = f"{type(err).__name__}: {err}"

# The famous couplets of tests/conftest.py (Hafez first and last), one hemistich a line.
COUPLETS = [
    "الا یا ایها الساقی ادر کاسا و ناولها\nکه عشق آسان نمود اول ولی افتاد مشکل‌ها",
    "دوش دیدم که ملایک در میخانه زدند\nگل آدم بسرشتند و به پیمانه زدند",
    "بنی آدم اعضای یکدیگرند\nکه در آفرینش ز یک گوهرند",
    "بشنو این نی چون شکایت می‌کند\nاز جدایی‌ها حکایت می‌کند",
    "توانا بود هر که دانا بود\nز دانش دل پیر برنا بود",
    "این قافله عمر عجب می‌گذرد\nدریاب دمی که با طرب می‌گذرد",
]


# --------------------------------------------------------------------------------------------
# The exported decode step


class DecodeStep(nn.Module):
    """One decoding step of `gpt` with the KV cache as explicit inputs and outputs.

    forward(ids (B, 1) int64, pos (1,) int64, past_k, past_v (L, B, H, P, D) float32)
      -> logits (B, vocab), new_k, new_v (L, B, H, 1, D)
    The same arithmetic as GPT.decode_step (which the correctness check compares it with)."""

    def __init__(self, gpt: GPT, attention: str = "sdpa"):
        super().__init__()
        self.gpt = gpt
        self.attention = attention
        c = gpt.config
        self.H, self.D, self.C = c.n_head, c.n_embd // c.n_head, c.n_embd

    def forward(self, ids, pos, past_k, past_v):
        gpt, H, D, C = self.gpt, self.H, self.D, self.C
        B = ids.shape[0]
        x = F.embedding(ids.reshape(B), gpt.token_embedding.weight)  # (B, C)
        kind = gpt.config.positional
        cos = sin = None
        if kind == "sinusoidal":
            x = x + gpt.position_table.index_select(0, pos) * gpt.position_scale
        elif kind == "learned":
            x = x + gpt.position_embedding.weight.index_select(0, pos)
        else:  # rotary: (1, D/2), broadcast over (B, H, 1, D/2)
            cos, sin = gpt.rotary_cos.index_select(0, pos), gpt.rotary_sin.index_select(0, pos)
        new_k, new_v = [], []
        for layer, block in enumerate(gpt.blocks):
            q, k, v = block.attn.qkv(block.ln1(x)).reshape(B, 3, H, 1, D).unbind(1)  # (B, H, 1, D)
            if cos is not None:
                q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            if block.attn.qk_norm:
                q = F.rms_norm(q, (D,), eps=1e-5)
                k = F.rms_norm(k, (D,), eps=1e-5)
            new_k.append(k)
            new_v.append(v)
            keys = torch.cat([past_k[layer], k], dim=2)  # (B, H, P + 1, D)
            values = torch.cat([past_v[layer], v], dim=2)
            if self.attention == "sdpa":
                y = F.scaled_dot_product_attention(q, keys, values)
            else:  # spelled out
                scores = (q @ keys.transpose(-2, -1)) * (1.0 / math.sqrt(D))
                y = scores.softmax(dim=-1) @ values
            x = x + block.attn.proj(y.reshape(B, C))
            x = x + block.ff.down(_activation(block.ff.kind, block.ff.up(block.ln2(x))))
        logits = gpt.lm_head(gpt.ln_f(x))
        cap = gpt.config.logit_softcap
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return logits, torch.stack(new_k), torch.stack(new_v)


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def export_decode_step(gpt: GPT, path: Path, opset: int) -> dict:
    """Export `DecodeStep(gpt)` to `path`; tries the dynamo exporter with SDPA, then with the
    spelled-out attention, then the TorchScript exporter. Returns how it was exported and what failed."""
    c = gpt.config
    L, H, D = c.n_layer, c.n_head, c.n_embd // c.n_head
    B, P = 2, 5  # example sizes other than 0 and 1, which torch.export would specialize on
    args = (torch.zeros(B, 1, dtype=torch.long), torch.tensor([P], dtype=torch.long),
            torch.zeros(L, B, H, P, D), torch.zeros(L, B, H, P, D))
    names = {"input_names": ["ids", "pos", "past_k", "past_v"], "output_names": ["logits", "new_k", "new_v"]}
    failures = []
    for dynamo, attention in ((True, "sdpa"), (True, "explicit"), (False, "sdpa"), (False, "explicit")):
        wrapper = DecodeStep(gpt, attention).eval()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if dynamo:
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    past = torch.export.Dim("past_len", min=0, max=c.context_length - 1)
                    torch.onnx.export(
                        wrapper, args, str(path), dynamo=True, opset_version=opset, external_data=False,
                        dynamic_shapes={"ids": {0: batch}, "pos": None,
                                        "past_k": {1: batch, 3: past}, "past_v": {1: batch, 3: past}},
                        **names)
                else:
                    torch.onnx.export(
                        wrapper, args, str(path), dynamo=False, opset_version=opset,
                        dynamic_axes={"ids": {0: "batch"}, "past_k": {1: "batch", 3: "past_len"},
                                      "past_v": {1: "batch", 3: "past_len"}, "logits": {0: "batch"},
                                      "new_k": {1: "batch"}, "new_v": {1: "batch"}},
                        **names)
            import onnx
            model = onnx.load(str(path))
            ops = sorted({n.op_type for n in model.graph.node})
            opset_used = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
            return {"exporter": "dynamo" if dynamo else "torchscript", "attention": attention,
                    "opset": opset_used, "ops": ops, "nodes": len(model.graph.node),
                    "bytes": path.stat().st_size, "failures": failures}
        except Exception as err:  # noqa: BLE001 (any exporter failure: try the next way)
            failures.append(f"dynamo={dynamo} attention={attention}: {type(err).__name__}: {str(err)[:300]}")
    raise RuntimeError("every export failed:\n" + "\n".join(failures))


# --------------------------------------------------------------------------------------------
# Runners: each prefills a (B, T) prompt, then decodes greedily; `decode` returns the new tokens.


class TorchRunner:
    def __init__(self, gpt: GPT):
        self.gpt = gpt

    @torch.no_grad()
    def prefill(self, prompt: np.ndarray):
        self.cache = KVCache(self.gpt.config, prompt.shape[0], "cpu", torch.float32)
        logits, _, _ = self.gpt(torch.from_numpy(prompt), cache=self.cache)
        self.logits = logits[:, -1]

    @torch.no_grad()
    def decode(self, steps: int):
        logits, cache, step = self.logits, self.cache, self.gpt.decode_step
        for _ in range(steps):
            logits = step(logits.argmax(-1, keepdim=True), cache)
        self.logits = logits


class OrtRunner:
    def __init__(self, session, config: GPTConfig):
        self.session = session
        c = config
        self.shape = (c.n_layer, c.n_head, c.context_length, c.n_embd // c.n_head)

    def _step(self, ids: np.ndarray):
        P = self.length
        logits, nk, nv = self.session.run(None, {
            "ids": ids, "pos": np.array([P], dtype=np.int64),
            "past_k": self.k[:, :, :, :P], "past_v": self.v[:, :, :, :P]})
        self.k[:, :, :, P:P + 1] = nk
        self.v[:, :, :, P:P + 1] = nv
        self.length = P + 1
        return logits

    def prefill(self, prompt: np.ndarray):
        L, H, T, D = self.shape
        B = prompt.shape[0]
        self.k = np.zeros((L, B, H, T, D), np.float32)
        self.v = np.zeros((L, B, H, T, D), np.float32)
        self.length = 0
        for t in range(prompt.shape[1]):  # no prefill graph: token by token
            self.logits = self._step(np.ascontiguousarray(prompt[:, t:t + 1]))

    def decode(self, steps: int):
        logits = self.logits
        for _ in range(steps):
            logits = self._step(logits.argmax(-1)[:, None].astype(np.int64))
        self.logits = logits


def np_forward(model, ids, cache):
    """InferenceGPT.forward's logits (it returns (logits, attention weights or None))."""
    out = model.forward(ids, cache)
    return out[0] if isinstance(out, tuple) else out


class NumpyRunner:
    def __init__(self, model):
        self.model = model

    def prefill(self, prompt: np.ndarray):
        self.cache = self.model.new_cache(prompt.shape[0])
        self.logits = np_forward(self.model, prompt, self.cache)[:, -1]

    def decode(self, steps: int):
        logits, step, cache = self.logits, self.model.decode_step, self.cache
        for _ in range(steps):
            logits = step(logits.argmax(-1), cache)
        self.logits = logits


# --------------------------------------------------------------------------------------------


def ort_session(path: Path, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def sequence(tokenizer, length: int) -> list[int]:
    """`length` tokens of real verse: the couplets' hemistichs, each followed by its separator
    token (<|hemi|> inside a couplet, <|beyt|> after it), Hafez first, cycling if need be."""
    hemi, beyt = tokenizer.token_to_id("<|hemi|>"), tokenizer.token_to_id("<|beyt|>")
    ids: list[int] = []
    while len(ids) < length:
        for couplet in COUPLETS:
            first, second = couplet.split("\n")
            ids += tokenizer.encode(first) + [hemi] + tokenizer.encode(second) + [beyt]
    return ids[:length]


def logit_deviation(ref: np.ndarray, other: np.ndarray) -> dict:
    """ref, other: (steps, B, V). Max and mean |difference|, the reference's logit std, how often
    the top-1 token agrees, and the mean KL(ref || other) in nats."""
    diff = np.abs(ref.astype(np.float64) - other.astype(np.float64))
    lp = torch.log_softmax(torch.from_numpy(ref).double(), -1)
    lq = torch.log_softmax(torch.from_numpy(other).double(), -1)
    kl = (lp.exp() * (lp - lq)).sum(-1).mean().item()
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "ref_std": float(ref.std()),
            "top1_agree": float((ref.argmax(-1) == other.argmax(-1)).mean()), "kl_nats": kl}


@torch.no_grad()
def check_correctness(gpt: GPT, gpt_int8: GPT, sessions: dict, np_model, ids: list[int]) -> dict:
    """Token-by-token logits over `ids` (batch 1, and batch 2 with the reversed sequence as the
    second row), every runtime against torch float32 `decode_step`."""
    out = {}
    for B in (1, 2):
        rows = np.array([ids, ids[::-1]][:B], dtype=np.int64)
        T = rows.shape[1]

        def torch_logits(model, rows=rows):
            cache = KVCache(model.config, rows.shape[0], "cpu", torch.float32)
            return np.stack([model.decode_step(torch.from_numpy(rows[:, t:t + 1]), cache).numpy()
                             for t in range(rows.shape[1])])

        ref = torch_logits(gpt)
        res = {"torch_int8": logit_deviation(ref, torch_logits(gpt_int8))}
        for name, session in sessions.items():
            runner = OrtRunner(session, gpt.config)
            runner.prefill(rows[:, :0])
            res[name] = logit_deviation(ref, np.stack([runner._step(rows[:, t:t + 1]) for t in range(T)]))
        if np_model is not None:
            cache = np_model.new_cache(B)
            res["numpy_decode_step"] = logit_deviation(
                ref, np.stack([np_model.decode_step(rows[:, t], cache) for t in range(T)]))
            full, _, _ = gpt(torch.from_numpy(rows))
            res["numpy_forward_vs_torch_forward"] = logit_deviation(
                full.numpy().transpose(1, 0, 2), np_forward(np_model, rows, np_model.new_cache(B)).transpose(1, 0, 2))
        out[f"batch{B}"] = res
    return out


def bench(runners: dict, prompts: np.ndarray, new_tokens: int, repeats: int, threads: int) -> dict:
    """Median decode tokens/s (B * new_tokens / seconds) and prefill ms of each runner, the runners
    alternating within each repetition. One warm-up run each first."""
    torch.set_num_threads(threads)
    B = prompts.shape[0]
    times = {name: {"decode": [], "prefill": [], "cpu": []} for name in runners}
    for rep in range(repeats + 1):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.prefill(prompts)
            t1, c1 = time.perf_counter(), time.process_time()
            runner.decode(new_tokens)
            t2, c2 = time.perf_counter(), time.process_time()
            if rep:  # rep 0 warms up
                times[name]["prefill"].append(t1 - t0)
                times[name]["decode"].append(t2 - t1)
                times[name]["cpu"].append(c2 - c1)
    out = {}
    for name, t in times.items():
        decode = statistics.median(t["decode"])
        out[name] = {"tokens_per_s": B * new_tokens / decode, "ms_per_step": 1000 * decode / new_tokens,
                     "cpu_ms_per_step": 1000 * statistics.median(t["cpu"]) / new_tokens,
                     "prefill_ms": 1000 * statistics.median(t["prefill"]),
                     "decode_s_all": t["decode"]}
    return out


def import_cost(module: str, repeats: int) -> dict:
    walls, rss = [], []
    for _ in range(repeats):
        r = subprocess.run(["/usr/bin/time", "-f", "%e %M", sys.executable, "-c", f"import {module}"],
                           capture_output=True, text=True, check=True)
        wall, kb = r.stderr.strip().splitlines()[-1].split()
        walls.append(float(wall))
        rss.append(int(kb))
    return {"wall_s": statistics.median(walls), "max_rss_mib": statistics.median(rss) / 1024,
            "wall_s_all": walls, "max_rss_kib_all": rss}


def _dist_bytes(name: str) -> int:
    dist = md.distribution(name)
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    return total


def _requirements(name: str) -> list[str]:
    out = []
    for req in md.distribution(name).requires or []:
        from packaging.requirements import Requirement
        r = Requirement(req)
        if r.marker is not None and not r.marker.evaluate({"extra": ""}):
            continue
        out.append(r.name)
    return out


def installed_size(name: str) -> dict:
    """Installed bytes (files in the RECORD) of a distribution and of everything it requires."""
    seen, todo = {}, [name]
    while todo:
        n = todo.pop()
        key = re.sub(r"[-_.]+", "-", n).lower()
        if key in seen:
            continue
        try:
            seen[key] = (_dist_bytes(n), md.version(n))
        except md.PackageNotFoundError:
            seen[key] = (0, None)
            continue
        todo += _requirements(n)
    return {"self_mib": seen[re.sub(r"[-_.]+", "-", name).lower()][0] / 2**20,
            "with_deps_mib": sum(b for b, _ in seen.values()) / 2**20,
            "deps": {k: {"mib": round(b / 2**20, 2), "version": v} for k, (b, v) in seen.items()}}


def uptime() -> str:
    return Path("/proc/loadavg").read_text().strip()


def new_config(shipped: GPTConfig) -> GPTConfig:
    d = shipped.to_dict()
    d.update(positional="rotary", norm="rmsnorm", mlp="relu2", qk_norm=True)
    return GPTConfig(**d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="write the results to this JSON file")
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model directory (default: the shipped model)")
    ap.add_argument("--new-weights", default=None,
                    help="a training checkpoint of the new config to load (default: random init, seed 0)")
    ap.add_argument("--prompt-tokens", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--check-tokens", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--opset", type=int, default=23,
                    help="23 (default) has Attention, Gelu and RMSNormalization ops; falls back to 17")
    ap.add_argument("--check-only", action="store_true", help="export and check the logits; no timing")
    ap.add_argument("--skip-footprint", action="store_true", help="skip the import-time and size measurements")
    ap.add_argument("--workdir", default=None, help="keep the .onnx files here (default: a temporary directory)")
    args = ap.parse_args()

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    torch.set_num_threads(1)
    result = {"load_before": uptime(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
              "versions": {n: (md.version(n) if _installed(n) else None)
                           for n in ("onnxruntime", "onnx", "onnxscript", "torch", "numpy", "protobuf",
                                     "flatbuffers")},
              "python": sys.version.split()[0], "numpy_engine": "included" if InferenceGPT else
              f"not included ({NUMPY_IMPORT_ERROR})", "models": {}}
    print(f"load average before: {result['load_before']}", flush=True)
    shipped = load_model_dir(args.model)
    tokenizer = shipped.tokenizer
    check_ids = sequence(tokenizer, args.check_tokens)
    prompt_rows = np.array([sequence(tokenizer, 6 * 30)[i * 3:i * 3 + args.prompt_tokens] for i in range(8)],
                           dtype=np.int64)  # 8 different 20-token prompts

    torch.manual_seed(0)
    new = GPT(new_config(shipped.model.config)).eval()
    new_source = "random init (seed 0)"
    if args.new_weights:
        state = torch.load(args.new_weights, map_location="cpu", weights_only=True)
        new.load_state_dict(state.get("model", state))
        new_source = f"{args.new_weights} (step {state.get('step')})"

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="onnx_runtime_"))
    workdir.mkdir(parents=True, exist_ok=True)
    table = []
    for label, gpt, source in (("shipped", shipped.model.eval(), str(args.model)), ("new", new, new_source)):
        c = gpt.config
        print(f"\n== {label}: {source}; {c.positional}, {c.norm}, {c.mlp}, qk_norm={c.qk_norm}, "
              f"{c.n_layer}x{c.n_embd}, {c.n_head} heads, {gpt.num_parameters() / 1e6:.2f} M parameters", flush=True)
        rec = {"source": source, "config": c.to_dict(), "parameters": gpt.num_parameters()}
        fp32, int8 = workdir / f"{label}_decode.onnx", workdir / f"{label}_decode_int8.onnx"
        t = time.perf_counter()
        try:
            rec["export"] = export_decode_step(gpt, fp32, args.opset)
        except RuntimeError as err:  # e.g. an older torch or onnxscript without opset 23
            if args.opset == 17:
                raise
            print(f"opset {args.opset} failed, trying 17: {err}")
            rec["export"] = export_decode_step(gpt, fp32, 17)
        rec["export"]["seconds"] = time.perf_counter() - t
        print(f"exported with {rec['export']['exporter']} ({rec['export']['attention']} attention), "
              f"opset {rec['export']['opset']}, {rec['export']['nodes']} nodes, "
              f"{rec['export']['bytes'] / 2**20:.1f} MiB; ops: {' '.join(rec['export']['ops'])}", flush=True)
        for f in rec["export"]["failures"]:
            print(f"  (failed first: {f})")
        # "ORT int8" quantizes the MatMul weights only (the exporter's Gemms are turned into
        # MatMuls by the quantizer), as torch's quantize_int8 does its Linears: quantize_dynamic's
        # default op set also quantizes Gather tables, here the sinusoidal position table or the
        # rotary cos/sin tables, which costs accuracy and gains nothing (measured below as
        # ort_int8_default_ops). It also takes the standard (opset 23) Attention node for its own
        # com.microsoft Attention and writes a QAttention that does not load: that op type is left out.
        int8_default, int8_pc = workdir / f"{label}_decode_int8_default_ops.onnx", workdir / f"{label}_decode_int8_pc.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        quantize_dynamic(str(fp32), str(int8_default), weight_type=QuantType.QInt8,
                         op_types_to_quantize=[op for op in IntegerOpsRegistry if op != "Attention"])
        quantize_dynamic(str(fp32), str(int8_pc), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True)
        rec["int8_onnx_bytes"] = int8.stat().st_size
        gpt_int8 = quantize_int8(copy.deepcopy(gpt)).eval()
        np_model = None
        if InferenceGPT is not None:
            weights = {k: v.detach().float().numpy() for k, v in gpt.state_dict().items()}
            np_model = InferenceGPT(c, weights)

        sessions = {"ort_fp32": ort_session(fp32, 1), "ort_int8": ort_session(int8, 1)}
        rec["correctness"] = check_correctness(
            gpt, gpt_int8, sessions | {"ort_int8_default_ops": ort_session(int8_default, 1),
                                       "ort_int8_per_channel": ort_session(int8_pc, 1)}, np_model, check_ids)
        for B, res in rec["correctness"].items():
            for name, d in res.items():
                print(f"  {B} {name:32s} max|Δlogit| {d['max_abs']:.2e}  mean {d['mean_abs']:.2e}  "
                      f"(logit std {d['ref_std']:.2f})  top-1 agree {d['top1_agree']:.3f}  KL {d['kl_nats']:.2e}")

        rec["speed"] = {}
        if args.check_only:
            result["models"][label] = rec
            continue
        for B, threads in ((1, 1), (8, 1), (8, 2)):
            runners = {"torch fp32": TorchRunner(gpt), "torch int8": TorchRunner(gpt_int8)}
            if threads == 1:
                runners |= {"ORT fp32": OrtRunner(sessions["ort_fp32"], c), "ORT int8": OrtRunner(sessions["ort_int8"], c)}
            else:
                runners |= {"ORT fp32": OrtRunner(ort_session(fp32, threads), c),
                            "ORT int8": OrtRunner(ort_session(int8, threads), c)}
            if np_model is not None and threads == 1:
                runners["numpy fp32"] = NumpyRunner(np_model)
            key = f"B{B}_threads{threads}"
            load = uptime()
            rec["speed"][key] = res = bench(runners, prompt_rows[:B], args.new_tokens, args.repeats, threads)
            rec["speed"][key + "_load_before"] = load
            base, base_cpu = res["torch fp32"]["tokens_per_s"], res["torch fp32"]["cpu_ms_per_step"]
            for name, d in res.items():
                d["vs_torch_fp32"] = d["tokens_per_s"] / base
                d["vs_torch_fp32_cpu"] = base_cpu / d["cpu_ms_per_step"]
                table.append((label, B, threads, name, d))
                print(f"  B={B} threads={threads} {name:11s} {d['tokens_per_s']:8.1f} tok/s  "
                      f"({d['ms_per_step']:.2f} ms/step, cpu {d['cpu_ms_per_step']:.2f})  x{d['vs_torch_fp32']:.2f}  "
                      f"prefill {d['prefill_ms']:.1f} ms", flush=True)
        torch.set_num_threads(1)
        result["models"][label] = rec

    if not args.skip_footprint:
        result["import"] = {m: import_cost(m, args.repeats) for m in ("onnxruntime", "torch", "numpy")}
        result["installed"] = {n: installed_size(n) for n in ("onnxruntime", "torch", "onnx", "onnxscript")}
    result["load_after"] = uptime()

    lines = [(f"Decoding {args.new_tokens} tokens (greedy) after a {args.prompt_tokens}-token prompt; tokens/s = "
              f"batch x {args.new_tokens} / decode seconds, median of {args.repeats}. Load average before "
              f"{result['load_before']}, after {result['load_after']} (/proc/loadavg). Speed-up: torch fp32's time "
              "over the runtime's, same model, batch and threads, in wall time and in process CPU time."), "",
             "| model | batch | threads | runtime | tokens/s | ms/step | CPU ms/step | speed-up (wall) | speed-up (CPU) | prefill ms | max abs Δlogit (B=1) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    dev_key = {"torch fp32": None, "torch int8": "torch_int8", "ORT fp32": "ort_fp32", "ORT int8": "ort_int8",
               "numpy fp32": "numpy_decode_step"}
    for label, B, threads, name, d in table:
        k = dev_key[name]
        dev = result["models"][label]["correctness"]["batch1"][k]["max_abs"] if k else 0.0
        lines.append(f"| {label} | {B} | {threads} | {name} | {d['tokens_per_s']:.0f} | {d['ms_per_step']:.2f} | "
                     f"{d['cpu_ms_per_step']:.2f} | {d['vs_torch_fp32']:.2f} | {d['vs_torch_fp32_cpu']:.2f} | {d['prefill_ms']:.1f} | "
                     f"{'reference' if k is None else f'{dev:.1e}'} |")
    lines += ["", (f"Logits over a {args.check_tokens}-token sequence, decoded token by token, against torch "
                   "float32 decode_step (batch 2: the reversed sequence as the second row); KL in nats per token."), "",
              "| model | batch | runtime | max abs Δlogit | mean abs Δlogit | logit std | top-1 agrees | KL |",
              "|---|---|---|---|---|---|---|---|"]
    for label, rec in result["models"].items():
        for B, res in rec["correctness"].items():
            for name, d in res.items():
                lines.append(f"| {label} | {B[5:]} | {name} | {d['max_abs']:.2e} | {d['mean_abs']:.2e} | "
                             f"{d['ref_std']:.2f} | {d['top1_agree']:.3f} | {d['kl_nats']:.1e} |")
    if "import" in result:
        lines += ["", "| import | wall s | max RSS MiB |", "|---|---|---|"]
        for m, d in result["import"].items():
            lines.append(f"| {m} | {d['wall_s']:.2f} | {d['max_rss_mib']:.0f} |")
        lines += ["", "| distribution | installed MiB | with its dependencies MiB |", "|---|---|---|"]
        for n, d in result["installed"].items():
            lines.append(f"| {n} | {d['self_mib']:.1f} | {d['with_deps_mib']:.1f} ({', '.join(sorted(d['deps']))}) |")
    if InferenceGPT is None:
        lines.append(f"\nnumpy InferenceGPT not included: {NUMPY_IMPORT_ERROR}")
    result["table_markdown"] = "\n".join(lines)
    print("\n" + result["table_markdown"])
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"\nwrote {args.out}")


def _installed(name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
