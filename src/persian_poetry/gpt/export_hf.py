"""Our model as a Hugging Face model, so a researcher can take it into `transformers`.

The architecture follows the model's config: the GPT-2 block goes to `GPT2LMHeadModel`, the modern
block to transformers' `NanoChatForCausalLM`; any other combination is refused (`ExportError`
names the options that neither takes). Both are loaded by `AutoModelForCausalLM` without
`trust_remote_code`, and each computes our logits (to float rounding).

**GPT-2** (positional "sinusoidal" or "learned", norm "layernorm", mlp "gelu", no QK-norm, tied
embeddings, no soft-cap; biases or not). Three differences, each mapped exactly:

* Sinusoidal positions come from a fixed table times `position_scale` (model.py), not a learned
  matrix. The table is a matrix like any other, so it goes into GPT-2's `wpe` as it is (a learned
  table goes there too).
* Our layers may have no biases (`bias=False`) where GPT-2 always has them: they are written as zeros.
* Our `nn.Linear` weights are (out, in); GPT-2's `Conv1D` stores (in, out): each is transposed.
  q, k, v sit in one matrix in the same order and split into heads the same way in both.

GELU is the exact (erf) one in both (`F.gelu` = transformers' "gelu"; "gelu_new" is the tanh
approximation), LayerNorm's epsilon is torch's default 1e-5, the output layer is tied to the token
embedding.

**NanoChat** (positional "rotary", norm "rmsnorm", mlp "relu2", qk_norm, bias=False; tied or not,
soft-capped or not). Its block is ours: rotary positions turning each pair (x_i, x_{i+D/2}) of a
head as [x1 cos + x2 sin, x2 cos - x1 sin] (its `rotate_half` is the flipped one, so no sign
change is needed), angles pos / 10000^(2i/D), then RMS-norm of each head's q and k without a
weight, attention scaled by 1/sqrt(D), a non-gated MLP fc2(relu(fc1 x)^2), logits
cap * tanh(logits / cap). The differences:

* NanoChat's RMSNorms have no weight; ours (`nn.RMSNorm`, eps 1e-5) have a gain g, and each feeds
  a linear layer, so g goes into that layer's input columns (W' = W * g): ln1 -> q/k/v, ln2 ->
  fc1, ln_f -> lm_head. The output layer therefore differs from the embedding (lm_head = our
  output matrix * g_f) and the export is untied (`tie_word_embeddings=False`) even for a tied model.
* NanoChat RMS-normalizes the embeddings before the first block; we do not. A row e with mean
  square m < 1 comes through that norm unchanged when stored as e * sqrt(eps / (1 - m)) (the norm
  gives c e / sqrt(c^2 m + eps) = e for c^2 = eps / (1 - m)), so `embed_tokens` holds the rows so
  scaled. A row with RMS >= 1 cannot be written (our trained embeddings are near 0.05).
* Our one q/k/v matrix is split into `q_proj`, `k_proj`, `v_proj` (heads in the same order).
* `rms_norm_eps` is 1e-5, which NanoChat uses in every norm (the block norms, the final norm and
  the q/k norms), as ours do; `rope_theta` is 10000 over the head size, as ours.

The tokenizer becomes a `PreTrainedTokenizerFast` with our control tokens as special tokens. It
does not apply `persian_poetry.text.normalize` (Python code, not a `tokenizers` normalizer): give
it normalized text, as our own `encode` does.

`transformers` is needed only here: `pip install 'persian-poetry[hf]'`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.controls import END, POEM
from ..data.tokenizer import BPETokenizer, CharTokenizer
from ..errors import ExportError
from .checkpoint import ModelDirectory
from .model import GPT
from .positions import position_angles
from .sampling import Sampling

LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which model.py uses
RMS_NORM_EPSILON = 1e-5  # model.py's nn.RMSNorm and QK-norm
ROPE_THETA = 10000.0  # positions.py's base

GPT2, NANOCHAT = "GPT2LMHeadModel", "NanoChatForCausalLM"

# What each transformers architecture takes: option -> the values it can express (None: any).
_TAKES = {
    GPT2: {"positional": ("sinusoidal", "learned"), "norm": ("layernorm",), "mlp": ("gelu",),
           "qk_norm": (False,), "tie_embeddings": (True,), "logit_softcap": (0.0,), "bias": None},
    NANOCHAT: {"positional": ("rotary",), "norm": ("rmsnorm",), "mlp": ("relu2",), "qk_norm": (True,),
               "bias": (False,), "tie_embeddings": None, "logit_softcap": None},
}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ExportError("the Hugging Face export needs transformers: pip install 'persian-poetry[hf]'") from None
    return transformers


def hf_architecture(model: GPT) -> str:
    """The transformers class our model's config maps onto: "GPT2LMHeadModel" or "NanoChatForCausalLM"."""
    c = model.config
    unlike = {}
    for arch, takes in _TAKES.items():
        unlike[arch] = [f"{name} {getattr(c, name)!r}" for name, values in takes.items()
                        if values is not None and getattr(c, name) not in values]
        if not unlike[arch]:
            return arch

    def wants(arch: str) -> str:
        return ", ".join(f"{name} {' or '.join(map(repr, values))}" for name, values in _TAKES[arch].items()
                         if values is not None)

    raise ExportError("this model matches no transformers architecture the export writes: "
                      + "; ".join(f"{arch} needs {wants(arch)} (this model has {', '.join(unlike[arch])})"
                                  for arch in _TAKES))


def _check_exportable(model: GPT) -> str:
    if type(model.lm_head) is not torch.nn.Linear:
        raise ExportError("a quantized model cannot be exported; load it without quantization")
    return hf_architecture(model)


def hf_config(model: GPT, bos_token_id: int | None = None, eos_token_id: int | None = None):
    """The `GPT2Config` or `NanoChatConfig` that describes `model`."""
    c = model.config
    transformers = _transformers()
    if hf_architecture(model) == NANOCHAT:
        return transformers.NanoChatConfig(
            vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.mlp_hidden, num_hidden_layers=c.n_layer,
            num_attention_heads=c.n_head, num_key_value_heads=c.n_head, max_position_embeddings=c.context_length,
            hidden_act="relu2", attention_dropout=c.attention_dropout, rms_norm_eps=RMS_NORM_EPSILON,
            rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
            final_logit_softcapping=c.logit_softcap if c.logit_softcap > 0 else None, attention_bias=False,
            tie_word_embeddings=False, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            pad_token_id=eos_token_id, architectures=[NANOCHAT])
    return transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.n_embd, n_layer=c.n_layer,
        n_head=c.n_head, n_inner=4 * c.n_embd, activation_function="gelu", layer_norm_epsilon=LAYER_NORM_EPSILON,
        resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.attention_dropout, scale_attn_weights=True,
        tie_word_embeddings=True, bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id,
        architectures=[GPT2])


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under the transformers model's names and in its layouts (float32, contiguous)."""
    if _check_exportable(model) == NANOCHAT:
        state = _nanochat_state_dict(model)
    else:
        state = _gpt2_state_dict(model)
    return {k: v.float().cpu().contiguous() for k, v in state.items()}


def _gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    c = model.config

    def bias_of(linear: torch.nn.Linear | torch.nn.LayerNorm) -> torch.Tensor:
        if linear.bias is not None:
            return linear.bias.detach()
        return torch.zeros(linear.weight.shape[0])

    def conv1d(linear: torch.nn.Linear) -> torch.Tensor:
        return linear.weight.detach().t()  # (out, in) -> GPT-2's Conv1D (in, out)

    wte = model.token_embedding.weight.detach()
    state = {"transformer.wte.weight": wte, "lm_head.weight": wte,
             "transformer.wpe.weight": model.positional_encoding(0, c.context_length).detach(),
             "transformer.ln_f.weight": model.ln_f.weight.detach(), "transformer.ln_f.bias": bias_of(model.ln_f)}
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}."
        parts = {"ln_1": block.ln1, "ln_2": block.ln2}
        for name, norm in parts.items():
            state[h + name + ".weight"] = norm.weight.detach()
            state[h + name + ".bias"] = bias_of(norm)
        for name, linear in (("attn.c_attn", block.attn.qkv), ("attn.c_proj", block.attn.proj),
                             ("mlp.c_fc", block.ff.up), ("mlp.c_proj", block.ff.down)):
            state[h + name + ".weight"] = conv1d(linear)
            state[h + name + ".bias"] = bias_of(linear)
    return state


def _nanochat_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    C = model.config.n_embd
    norms = [model.ln_f] + [n for b in model.blocks for n in (b.ln1, b.ln2)]
    if any(not isinstance(n, torch.nn.RMSNorm) or n.eps != RMS_NORM_EPSILON for n in norms):
        raise ExportError(f"NanoChat's norms all take one epsilon, {RMS_NORM_EPSILON}: this model's differ")

    def folded(linear: torch.nn.Linear, norm: torch.nn.RMSNorm) -> torch.Tensor:
        # linear(g * x_hat) = (W * g[None, :]) x_hat: the norm's gain goes into the layer's input columns.
        return linear.weight.detach().double() * norm.weight.detach().double()[None, :]

    # NanoChat RMS-normalizes the embeddings first: store each row e as c e, c = sqrt(eps / (1 - ms(e))),
    # which that norm turns back into e (c e / sqrt(c^2 ms + eps) = e).
    wte = model.token_embedding.weight.detach().double()
    mean_square = wte.square().mean(dim=1, keepdim=True)
    if mean_square.max().item() >= 1.0:
        worst = int(mean_square.argmax())
        raise ExportError(f"token {worst}'s embedding has RMS {mean_square.max().sqrt().item():.3g} >= 1: "
                          "NanoChat's norm after the embedding cannot give it back")
    state = {"model.embed_tokens.weight": wte * (RMS_NORM_EPSILON / (1.0 - mean_square)).sqrt(),
             "lm_head.weight": folded(model.lm_head, model.ln_f)}
    for i, block in enumerate(model.blocks):
        h = f"model.layers.{i}."
        q, k, v = folded(block.attn.qkv, block.ln1).split(C, dim=0)
        state.update({h + "self_attn.q_proj.weight": q, h + "self_attn.k_proj.weight": k,
                      h + "self_attn.v_proj.weight": v, h + "self_attn.o_proj.weight": block.attn.proj.weight.detach(),
                      h + "mlp.fc1.weight": folded(block.ff.up, block.ln2),
                      h + "mlp.fc2.weight": block.ff.down.weight.detach()})
    return state


def hf_tokenizer(tokenizer: CharTokenizer | BPETokenizer):
    """Our tokenizer as a `PreTrainedTokenizerFast` that gives the same ids on normalized text.

    The control tokens are special tokens, and unlike our `encode` (which never reads user text
    as a control) the exported one turns "<|poem|>" in its input into that token: HF users write
    prompts as text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    transformers = _transformers()
    if isinstance(tokenizer, BPETokenizer):
        hf = Tokenizer.from_str(tokenizer.hf.to_str())
        hf.encode_special_tokens = False
    else:
        # One token per character (newline included): a word-level model over single characters.
        vocab = {tokenizer.id_to_token(i): i for i in range(tokenizer.vocab_size)}
        hf = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()
        hf.add_special_tokens(tokenizer.special_tokens)
    specials = set(tokenizer.special_tokens)
    named = {"bos_token": POEM, "eos_token": END, "pad_token": END} if {POEM, END} <= specials else {}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=hf, clean_up_tokenization_spaces=False,
                                                model_max_length=None, **named)


def to_hf(poetry: ModelDirectory):
    """(model, PreTrainedTokenizerFast) in memory, in eval mode, on the CPU; the model a
    `GPT2LMHeadModel` or a `NanoChatForCausalLM` (see `hf_architecture`)."""
    transformers = _transformers()
    architecture = _check_exportable(poetry.model)
    tokenizer = hf_tokenizer(poetry.tokenizer)
    config = hf_config(poetry.model, tokenizer.bos_token_id, tokenizer.eos_token_id)
    model = getattr(transformers, architecture)(config)
    # strict: every weight is given (GPT-2's lm_head shares wte's storage; its causal-mask buffers are not weights).
    missing, unexpected = model.load_state_dict(hf_state_dict(poetry.model), strict=False)
    missing = [k for k in missing if not k.endswith(".attn.bias") and not k.endswith(".attn.masked_bias")]
    if missing or unexpected:
        raise ExportError(f"weight mapping does not match {architecture}: missing {missing}, unexpected {unexpected}")
    if architecture == GPT2:
        model.tie_weights()
    else:
        # Our angles are pos / 10000^(2i/D) (positions.py): NanoChat's inverse frequencies must be those.
        D = poetry.model.config.n_embd // poetry.model.config.n_head
        ours = torch.from_numpy(position_angles(2, D)[1]).float()
        if not torch.allclose(model.model.rotary_emb.inv_freq.float(), ours, rtol=1e-6, atol=0.0):
            raise ExportError("NanoChat's rotary frequencies differ from ours")
    return model.eval(), tokenizer


def export_hf(poetry: ModelDirectory, out_dir: str | Path) -> Path:
    """Write a loaded model directory (or a `PoetryModel`) to `out_dir` as a transformers checkpoint: model.safetensors, config.json,
    generation_config.json, tokenizer.json (+ its config) and a README. Returns out_dir."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    model, tokenizer = to_hf(poetry)
    if tokenizer.eos_token_id is not None:
        gen = model.generation_config
        ours = Sampling()  # our `generate` defaults
        gen.do_sample, gen.temperature, gen.top_k, gen.top_p = True, ours.temperature, ours.top_k, ours.top_p
        gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = (tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                                tokenizer.eos_token_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = _transformers().utils.logging
    was_enabled = progress.is_progress_bar_enabled()
    progress.disable_progress_bar()  # one small file: no bar
    try:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        if was_enabled:
            progress.enable_progress_bar()
    source = str(poetry.directory) if poetry.directory else "(in memory)"
    (out_dir / "README.md").write_text(_readme(poetry.model, source), encoding="utf-8")
    (out_dir / "persian_poetry.json").write_text(json.dumps(
        {"exported_from": source, "architecture": type(model).__name__,
         "metres": {str(k): v for k, v in sorted(poetry.metres.items())}},
        ensure_ascii=False, indent=1), encoding="utf-8")
    return out_dir


def _readme(model: GPT, source: str) -> str:
    c = model.config
    if hf_architecture(model) == NANOCHAT:
        what = (f"a NanoChatForCausalLM (transformers' `nanochat` architecture) with {c.n_layer} layers,\n"
                f"{c.n_head} heads, {c.n_embd} wide, {c.context_length} positions (rotary), {c.vocab_size} tokens"
                + (f", logits soft-capped at {c.logit_softcap:g}" if c.logit_softcap > 0 else "") + ".")
        mapping = _NANOCHAT_MAPPING
    else:
        table = "a learned table" if c.positional == "learned" else "a fixed sinusoidal table"
        what = (f"a GPT2LMHeadModel with {c.n_layer} layers,\n{c.n_head} heads, {c.n_embd} wide, "
                f"{c.context_length} positions ({table}, stored in `wpe`), {c.vocab_size} tokens.")
        mapping = _GPT2_MAPPING
    return _README.format(source=source, what=what, mapping=mapping)


_GPT2_MAPPING = """Our GPT-2 block maps onto GPT-2 exactly: the position table goes into `wpe`, missing biases are
written as zeros, the `nn.Linear` weights are transposed into GPT-2's `Conv1D` layout, GELU is the
exact (erf) one, LayerNorm's epsilon is 1e-5 and the output layer is tied to the token embedding."""

_NANOCHAT_MAPPING = """Our modern block (rotary positions, then QK RMS-norm; RMSNorm; ReLU² MLP; no biases) maps onto
nanochat exactly, with three changes to the stored weights, none to the function computed:

* each RMSNorm gain is folded into the input columns of the layer it feeds (ln1 into q/k/v,
  ln2 into `fc1`, the final norm into `lm_head`), since nanochat's norms have no weights; so
  `lm_head` differs from the embedding and the checkpoint is untied;
* nanochat RMS-normalizes the embeddings before the first layer, which ours does not: each
  row e is stored as e * sqrt(eps / (1 - mean(e²))), which that norm turns back into e. Read
  `embed_tokens` through that norm (`model.model.norm`) to get our embeddings;
* our one q/k/v matrix is split into `q_proj`, `k_proj`, `v_proj`.

Rotary angles are pos / 10000^(2i/D) in both, and nanochat's `rotate_half` has our sign
convention. `rms_norm_eps` is 1e-5 (every norm, q/k included), attention is scaled by 1/sqrt(D)."""

_README = """# Persian Poetry GPT, exported for transformers

Exported by `persian-poetry export-hf` from `{source}`: {what}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
from persian_poetry.text import normalize   # the tokenizer expects normalized text

tok = AutoTokenizer.from_pretrained(DIR)
model = AutoModelForCausalLM.from_pretrained(DIR)
ids = tok("<|poem|><|poet:hafez|><|form:ghazal|>", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=200)
print(tok.decode(out[0]))
```

Prompts are control tokens (`<|poem|>`, `<|poet:..|>`, `<|form:..|>`, `<|metre:..|>`, `<|rhyme|>` letters
`<|body|>`), then verse with `<|hemi|>` between hemistichs, `<|beyt|>` between couplets, `<|end|>` at the end.
`persian_poetry.json` maps the metre ids to their names. Plain `generate` does not keep the form;
`persian-poetry generate` does, by masking logits.

## How the weights were mapped

{mapping}
"""
