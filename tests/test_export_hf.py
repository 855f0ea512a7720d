"""The Hugging Face export: transformers, offline, computes the logits our model computes."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: no network, ever

import pytest
import torch
from conftest import hafez_ghazals
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from persian_poetry.cli import main
from persian_poetry.errors import ExportError
from persian_poetry.assets import DEFAULT_MODEL_DIR
from persian_poetry.gpt.checkpoint import load_model_dir
from persian_poetry.gpt.engine import Engine, Sampling, new_generator
from persian_poetry.gpt.export_hf import export_hf, hf_state_dict
from persian_poetry.gpt.model import GPT, GPTConfig, sinusoidal_table
from persian_poetry.text import normalize
from persian_poetry.writing.bundle import load_model


@pytest.fixture(scope="module")
def poetry():
    """The shipped model as PyTorch's GPT: what the export converts."""
    torch.set_num_threads(1)
    return load_model_dir(DEFAULT_MODEL_DIR)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "hafez-gpt"
    assert main(["export-hf", str(out)]) == 0
    return out


def load_hf(directory):
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    return model, tokenizer


def real_windows(poetry, count: int = 3) -> torch.Tensor:
    """Header + verse of Hafez ghazals, each a full context of token ids."""
    tok = poetry.tokenizer
    head = [tok.token_to_id(t) for t in ("<|poem|>", "<|poet:hafez|>", "<|form:ghazal|>")]
    rows = []
    for ghazal in hafez_ghazals()[:count]:
        ids = list(head)
        for i, hemistich in enumerate(ghazal * 3):  # repeated to fill the context
            ids += tok.encode(hemistich) + [tok.token_to_id("<|hemi|>" if i % 2 == 0 else "<|beyt|>")]
        rows.append(ids[:poetry.model.config.context_length])
    return torch.tensor(rows)


def test_the_export_is_a_gpt2_checkpoint_with_our_shape(exported, poetry):
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in exported.iterdir()}
    model, tokenizer = load_hf(exported)
    c = model.config
    assert type(model).__name__ == "GPT2LMHeadModel" and isinstance(tokenizer, PreTrainedTokenizerFast)
    assert (c.n_layer, c.n_head, c.n_embd, c.n_positions, c.vocab_size) == (6, 8, 256, 256, 4096)
    assert c.activation_function == "gelu" and c.layer_norm_epsilon == 1e-5  # exact GELU, torch's LayerNorm
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied
    table = sinusoidal_table(256, 256) * poetry.model.position_scale
    assert torch.allclose(model.transformer.wpe.weight, table)


def test_logits_agree_within_1e_4_on_real_persian_verse(exported, poetry):
    model, _ = load_hf(exported)
    x = real_windows(poetry)
    with torch.no_grad():
        ours, _, _ = poetry.model(x)
        theirs = model(x).logits
    assert ours.shape == theirs.shape == (3, 256, 4096)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_the_tokenizer_gives_our_ids_and_reads_control_tokens(exported, poetry):
    _, tokenizer = load_hf(exported)
    tok = poetry.tokenizer
    for hemistich in hafez_ghazals()[5][:6]:
        text = normalize(hemistich)
        assert tokenizer(text).input_ids == tok.encode(text)
        assert tokenizer.decode(tok.encode(text)) == text
    prompt = "<|poem|><|poet:hafez|><|form:ghazal|>"
    assert tokenizer(prompt).input_ids == [tok.token_to_id(t) for t in ("<|poem|>", "<|poet:hafez|>", "<|form:ghazal|>")]
    assert tokenizer.eos_token == "<|end|>" and tokenizer.eos_token_id == tok.token_to_id("<|end|>")


def test_transformers_greedy_generate_writes_what_our_engine_writes(exported, poetry):
    model, tokenizer = load_hf(exported)
    prompt = tokenizer("<|poem|><|poet:saadi|><|form:ghazal|>", return_tensors="pt").input_ids
    out = model.generate(prompt, do_sample=False, max_new_tokens=30, min_new_tokens=30)
    # our engine (numpy, as `generate` runs it) against transformers' own greedy decoding
    ours = list(Engine(load_model().model).stream(prompt[0].tolist(), 0, Sampling(top_k=1), new_generator(0), 30))
    assert out[0, prompt.shape[1]:].tolist() == ours


def test_a_char_model_exports_too(tiny_model_dir, tmp_path):
    small = load_model_dir(tiny_model_dir)
    model, tokenizer = load_hf(export_hf(small, tmp_path / "char"))
    text = normalize(hafez_ghazals()[0][0])
    ids = small.tokenizer.encode(text)
    assert tokenizer(text).input_ids == ids and tokenizer.decode(ids) == text
    x = torch.tensor([[small.tokenizer.token_to_id("<|poem|>")] + ids])
    with torch.no_grad():
        assert (small.model(x)[0] - model(x).logits).abs().max().item() < 1e-4


def test_a_quantized_model_is_not_exported():
    with pytest.raises(ExportError, match="quantized"):
        hf_state_dict(load_model_dir(DEFAULT_MODEL_DIR, quantize="int8").model)


def test_a_rotary_model_is_not_exported():
    model = GPT(GPTConfig(vocab_size=20, context_length=8, n_layer=1, n_head=2, n_embd=8, positional="rotary"))
    with pytest.raises(ExportError, match="rotary"):
        hf_state_dict(model)
