"""The numpy runtime computes what the PyTorch model computes, and writing needs no PyTorch.

Writing, scanning, explaining and serving run on `gpt.inference.InferenceGPT`; training and
evaluation on `gpt.model.GPT`. If the two drifted apart, the poems would come from a network nobody
trained or measured, so their logits are held together on real verse, for the shipped model and for
every architecture option, through the full forward pass, the KV cache and the attention weights.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import FAMOUS_COUPLETS, inference_of

from persian_poetry.assets import DEFAULT_MODEL_DIR
from persian_poetry.gpt.checkpoint import load_model_dir
from persian_poetry.gpt.directory import load_inference_model
from persian_poetry.gpt.inference import InferenceGPT
from persian_poetry.gpt.model import GPT, GPTConfig, KVCache

LOGITS = {"rtol": 0.0, "atol": 1e-4}  # the runtime's promise: logits equal to PyTorch's within 1e-4


@pytest.fixture(scope="module")
def shipped():
    return load_model_dir(DEFAULT_MODEL_DIR), load_inference_model(DEFAULT_MODEL_DIR)


def verse_ids(tokenizer, limit: int) -> list[int]:
    text = " ".join(FAMOUS_COUPLETS).replace("\n", " ")
    return tokenizer.encode(text)[:limit]


def test_the_shipped_model_gives_pytorchs_logits_on_real_verse(shipped):
    torch_dir, numpy_dir = shipped
    ids = verse_ids(torch_dir.tokenizer, torch_dir.model.config.context_length)
    assert len(ids) > 100
    with torch.no_grad():
        expected = torch_dir.model(torch.tensor([ids]))[0][0].numpy()
    logits, _ = numpy_dir.model.forward(np.array([ids]))
    np.testing.assert_allclose(logits[0], expected, **LOGITS)
    assert np.abs(expected).max() > 1.0  # logits of a real size: a tolerance of 1e-4 means something


def test_decoding_with_the_cache_gives_the_full_passes_logits(shipped):
    torch_dir, numpy_dir = shipped
    ids = verse_ids(torch_dir.tokenizer, 80)
    model = numpy_dir.model
    full, _ = model.forward(np.array([ids]))
    cache = model.new_cache(1)
    prefill, _ = model.forward(np.array([ids[:20]]), cache)
    steps = [model.decode_step([token], cache)[0] for token in ids[20:]]
    np.testing.assert_allclose(prefill[0], full[0, :20], **LOGITS)
    np.testing.assert_allclose(np.stack(steps[:-1]), full[0, 20:-1], **LOGITS)
    assert cache.length == len(ids)


OPTIONS = [
    {},  # GPT-2's block: LayerNorm, GELU, sinusoidal positions, tied embeddings
    {"positional": "rotary", "norm": "rmsnorm", "mlp": "relu2", "qk_norm": True},  # the modern block
    {"positional": "learned", "mlp": "swiglu", "bias": True},
    {"tie_embeddings": False, "logit_softcap": 15.0, "positional": "rotary"},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "gpt2")
def test_every_architecture_option_gives_pytorchs_numbers(options):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=60, context_length=32, n_layer=2, n_head=4, n_embd=32, **options)).eval()
    with torch.no_grad():  # trained-looking weights: norms and biases away from their initial 1 and 0
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    runtime = inference_of(model)
    ids = torch.randint(0, 60, (2, 20))
    with torch.no_grad():
        expected, _, expected_weights = model(ids, return_weights=True)
        reference = KVCache(model.config, 2, "cpu", torch.float32)
        model(ids[:, :12], cache=reference)
        expected_step = model.decode_step(ids[:, 12:13], reference).numpy()
    logits, weights = runtime.forward(ids.numpy(), return_weights=True)
    np.testing.assert_allclose(logits, expected.numpy(), **LOGITS)
    for ours, theirs in zip(weights, expected_weights, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=0.0, atol=1e-5)
    cache = runtime.new_cache(2)
    runtime.forward(ids[:, :12].numpy(), cache)
    np.testing.assert_allclose(runtime.decode_step(ids[:, 12].numpy(), cache), expected_step, **LOGITS)
    assert runtime.num_parameters() == model.num_parameters()


def test_attention_weights_are_causal_rows_that_sum_to_one(shipped):
    _, numpy_dir = shipped
    ids = verse_ids(numpy_dir.tokenizer, 30)
    _, weights = numpy_dir.model.forward(np.array([ids]), return_weights=True)
    assert len(weights) == numpy_dir.model.config.n_layer
    for w in weights:
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.triu(w[0], k=1) == 0)  # no token looks ahead


def test_the_matrices_lie_in_one_buffer_from_a_huge_page_boundary(shipped):
    model = shipped[1].model
    linears = [model.lm_head] + [getattr(b, part) for b in model.blocks for part in ("qkv", "proj", "up", "down")]
    bases = {id(linear.weight_t.base) for linear in linears}
    assert len(bases) == 1 and all(linear.weight_t.flags.c_contiguous for linear in linears)
    starts = sorted(linear.weight_t.ctypes.data for linear in linears)
    assert starts[0] % (2 << 20) == 0  # where Linux can back it with 2 MiB pages
    ends = sorted(linear.weight_t.ctypes.data + linear.weight_t.nbytes for linear in linears)
    assert starts[1:] == ends[:-1]  # one after the other, no gaps, no overlaps
    first = model.blocks[0].up
    np.testing.assert_array_equal(first.weight_t, model.weights["blocks.0.ff.up.weight"].T)


def test_weights_that_do_not_fit_the_config_are_refused():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, context_length=8, n_layer=2, n_head=2, n_embd=8)).eval()
    weights = {k: v.numpy() for k, v in model.state_dict().items() if not k.startswith("blocks.1.")}
    with pytest.raises(KeyError, match="blocks.1"):
        InferenceGPT(model.config, weights)


def test_the_context_length_is_a_hard_limit(shipped):
    _, numpy_dir = shipped
    limit = numpy_dir.model.config.context_length
    with pytest.raises(ValueError, match="exceed the context length"):
        numpy_dir.model.forward(np.zeros((1, limit + 1), dtype=np.int64))


# -- no PyTorch where a poem is written, scanned, explained or served ---------------------------

HEMISTICH = FAMOUS_COUPLETS[0].split("\n")[0]



def _command(*argv: str) -> str:
    return f"from persian_poetry.cli import main\nrc = main({list(argv)!r})"


TORCH_FREE = {
    "generate": _command("generate", "--poet", "hafez", "--form", "ghazal", "--couplets", "2", "--seed", "1"),
    "generate --free": _command("generate", "--poet", "saadi", "--form", "ghazal", "--couplets", "2", "--seed", "2",
                                "--free"),
    "scan": _command("scan", HEMISTICH),
    "explain tokens": _command("explain", "tokens", HEMISTICH),
    "explain attention": _command("explain", "attention", "--text", HEMISTICH, "--layer", "1", "--head", "1"),
    "explain generate": _command("explain", "generate", "--steps", "5"),
    "the Python API": textwrap.dedent(f"""
        from persian_poetry import PoemRequest, load_model, scan, write_poem
        poem = write_poem(load_model(), PoemRequest(poet="hafez", form="ghazal", couplets=2, seed=3))
        assert len(poem.couplets) == 2
        assert scan({HEMISTICH!r}).metre_id is not None
        rc = 0"""),
    "serve": textwrap.dedent(f"""
        from fastapi.testclient import TestClient
        from persian_poetry.serve.app import create_app
        with TestClient(create_app(), base_url="http://localhost") as client:
            assert client.get("/healthz").status_code == 200
            assert client.post("/api/scan", json={{"text": {HEMISTICH!r}}}).status_code == 200
            assert client.post("/api/explain/attention", json={{"text": {HEMISTICH!r}}}).status_code == 200
            poem = client.post("/api/generate", json={{"poet": "hafez", "form": "ghazal", "couplets": 1, "seed": 1}})
            assert poem.status_code == 200 and "event: poem" in poem.text, poem.text[-300:]
        rc = 0"""),
}


@pytest.mark.parametrize("what", list(TORCH_FREE))
def test_writing_scanning_explaining_and_serving_never_import_torch(what):
    code = f"import sys\n{TORCH_FREE[what]}\nassert rc == 0, rc\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def _blas_threads(code: str, env: dict) -> list[int]:
    probe = (f"{code}\nfrom threadpoolctl import threadpool_info\n"
             "print(sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("what", ["generate", "scan", "explain tokens"])
def test_the_writing_commands_start_numpy_with_one_blas_thread(what):
    """A decoding step's products are too small to share out, and a pool of BLAS threads costs CPU
    at start-up: the commands that run the numpy network start BLAS with one thread."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _blas_threads(TORCH_FREE[what], env) == [1]
    if (os.cpu_count() or 1) > 1:  # without the command, numpy starts one thread a core
        assert _blas_threads("import numpy", env) != [1]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="BLAS keeps to one thread on one core")
def test_a_users_own_blas_setting_is_kept():
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    assert _blas_threads(TORCH_FREE["generate"], env) == [2]


@pytest.mark.parametrize(("module", "argv", "extra"), [
    ("torch", ["evaluate", "--data", "{tmp}/none.jsonl"], "train"),
    ("matplotlib", ["explain", "attention", "--example", "--plot", "{tmp}/a.png"], "plots"),
])
def test_a_command_whose_optional_part_is_missing_says_how_to_install_it(tmp_path, module, argv, extra):
    """`pip install .` leaves out PyTorch (training, evaluation) and matplotlib (figures): a command
    that needs one says which extra to install, in one line, and writes nothing."""
    argv = [a.format(tmp=tmp_path) for a in argv]
    code = (f"import sys\nsys.modules[{module!r}] = None  # as if it were not installed\n"
            f"from persian_poetry.cli import main\nsys.exit(main({argv!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"needs {module}" in result.stderr and f"pip install 'persian-poetry[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []
