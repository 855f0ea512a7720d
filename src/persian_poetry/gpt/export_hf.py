"""Our model as a Hugging Face `GPT2LMHeadModel`, so a researcher can take it into `transformers`.

Our GPT is GPT-2's architecture with three differences, each mapped exactly:

* Positions come from a fixed sinusoidal table times `position_scale` (model.py), not a learned
  matrix. The table is a matrix like any other, so it goes into GPT-2's `wpe` as it is.
* Our layers have no biases (`bias=False`) where GPT-2 always has them: they are written as zeros.
* Our `nn.Linear` weights are (out, in); GPT-2's `Conv1D` stores (in, out): each is transposed.
  q, k, v sit in one matrix in the same order and split into heads the same way in both.

GELU is the exact (erf) one in both (`F.gelu` = transformers' "gelu"; "gelu_new" is the tanh
approximation), LayerNorm's epsilon is torch's default 1e-5, the output layer is tied to the token
embedding. The tokenizer becomes a `PreTrainedTokenizerFast` with our control tokens as special
tokens. It does not apply `persian_poetry.text.normalize` (Python code, not a `tokenizers`
normalizer): give it normalized text, as our own `encode` does.

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
from .sampling import Sampling

LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which model.py uses

def _transformers():
    try:
        import transformers
    except ImportError:
        raise ExportError("the Hugging Face export needs transformers: pip install 'persian-poetry[hf]'") from None
    return transformers


def hf_config(model: GPT, bos_token_id: int | None = None, eos_token_id: int | None = None):
    """The `GPT2Config` that describes `model`."""
    c = model.config
    return _transformers().GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.n_embd, n_layer=c.n_layer,
        n_head=c.n_head, n_inner=4 * c.n_embd, activation_function="gelu", layer_norm_epsilon=LAYER_NORM_EPSILON,
        resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.attention_dropout, scale_attn_weights=True,
        tie_word_embeddings=True, bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id,
        architectures=["GPT2LMHeadModel"])


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under GPT-2's names and in its layouts (float32, contiguous)."""
    if type(model.lm_head) is not torch.nn.Linear:
        raise ExportError("a quantized model cannot be exported; load it without quantization")
    c = model.config
    if c.positional == "rotary":
        raise ExportError("a model with rotary positions cannot be exported: GPT-2 only adds a position table")
    unlike_gpt2 = [f"{name} {value!r}" for name, value, gpt2 in (
        ("norm", c.norm, "layernorm"), ("mlp", c.mlp, "gelu"), ("qk_norm", c.qk_norm, False),
        ("tie_embeddings", c.tie_embeddings, True), ("logit_softcap", c.logit_softcap, 0.0)) if value != gpt2]
    if unlike_gpt2:
        raise ExportError(f"a model with {', '.join(unlike_gpt2)} cannot be exported: GPT-2 has none of these")

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
    return {k: v.float().cpu().contiguous() for k, v in state.items()}


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
    """(GPT2LMHeadModel, PreTrainedTokenizerFast) in memory, in eval mode, on the CPU."""
    transformers = _transformers()
    tokenizer = hf_tokenizer(poetry.tokenizer)
    config = hf_config(poetry.model, tokenizer.bos_token_id, tokenizer.eos_token_id)
    model = transformers.GPT2LMHeadModel(config)
    # strict: every GPT-2 weight is given (lm_head shares wte's storage).
    missing, unexpected = model.load_state_dict(hf_state_dict(poetry.model), strict=False)
    missing = [k for k in missing if not k.endswith(".attn.bias") and not k.endswith(".attn.masked_bias")]
    if missing or unexpected:
        raise ExportError(f"weight mapping does not match GPT-2: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
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
    (out_dir / "README.md").write_text(_README.format(source=source, layers=model.config.n_layer,
                                                      width=model.config.n_embd, heads=model.config.n_head,
                                                      context=model.config.n_positions,
                                                      vocab=model.config.vocab_size), encoding="utf-8")
    (out_dir / "persian_poetry.json").write_text(json.dumps(
        {"exported_from": source, "metres": {str(k): v for k, v in sorted(poetry.metres.items())}},
        ensure_ascii=False, indent=1), encoding="utf-8")
    return out_dir


_README = """# Persian Poetry GPT, exported for transformers

Exported by `persian-poetry export-hf` from `{source}`: a GPT2LMHeadModel with {layers} layers,
{heads} heads, {width} wide, {context} positions (a fixed sinusoidal table, stored in `wpe`), {vocab} tokens.

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
"""
