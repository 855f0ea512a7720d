"""Explain mode: the seed's worked examples against numbers computed here by hand, the real model's
attention and decoding trace against the model and the engine, the figures and the command."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import inference_of

from persian_poetry.cli import main
from persian_poetry.data.controls import Controls
from persian_poetry.data.tokenizer import CharTokenizer
from persian_poetry.errors import PoetryError
from persian_poetry.explain import lesson as explain
from persian_poetry.gpt.engine import Engine, Sampling, new_generator
from persian_poetry.gpt.model import GPT, GPTConfig
from persian_poetry.text import normalize
from persian_poetry.writing.bundle import PoetryModel, load_model

HEMISTICH = "الا یا ایها الساقی ادر کاسا و ناولها"


@pytest.fixture(scope="module")
def poetry() -> PoetryModel:
    return load_model()


@pytest.fixture(scope="module")
def small_poetry() -> PoetryModel:
    """A random model with a 16-token context, so that decoding overflows the window quickly."""
    torch.manual_seed(0)
    controls = Controls(("hafez",), ("ghazal",), (1,))
    tok = CharTokenizer(controls.special_tokens())
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layer=1, n_head=2, n_embd=16)).eval()
    return PoetryModel(inference_of(model), tok)


def softmax(xs: list[float]) -> list[float]:
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


# --- the seed's worked examples -----------------------------------------------------------------


def test_softmax_of_the_seed_scores_is_recomputed_not_copied():
    weights = explain.attention_example().heads[0].weights[0]  # "The" in head 1, scores 1, 1, 2, 0
    assert [round(w, 3) for w in weights] == [0.197, 0.197, 0.534, 0.072]
    assert [round(w, 2) for w in weights] != list(explain.SEED_PRINTED_SOFTMAX)


@pytest.mark.parametrize("scaled,causal", [(False, False), (True, False), (True, True)])
def test_attention_example_matches_a_computation_by_hand(scaled, causal):
    example = explain.attention_example(scaled=scaled, causal=causal)
    n = len(explain.SEED_WORDS)
    concatenated: list[list[float]] = [[] for _ in range(n)]
    for head, tables in zip(example.heads, explain.SEED_HEADS, strict=True):
        q, k, v = tables["q"], tables["k"], tables["v"]
        d_k = len(q[0])
        for i in range(n):
            visible = range(i + 1) if causal else range(n)
            scores = [sum(a * b for a, b in zip(q[i], k[j], strict=True)) / (math.sqrt(d_k) if scaled else 1)
                      for j in visible]
            weights = softmax(scores) + [0.0] * (n - len(scores))
            output = [sum(weights[j] * v[j][c] for j in range(n)) for c in range(len(v[0]))]
            assert head.scores[i][:len(scores)] == pytest.approx(scores)
            assert all(s is None for s in head.scores[i][len(scores):])
            assert head.weights[i] == pytest.approx(weights, abs=1e-12)
            assert head.outputs[i] == pytest.approx(output, abs=1e-12)
            concatenated[i] += output
    for got, want in zip(example.concatenated, concatenated, strict=True):
        assert got == pytest.approx(want)
    assert len(example.concatenated[0]) == 3 * 4


def test_causal_mask_lets_the_first_word_see_only_itself():
    example = explain.attention_example(scaled=True, causal=True)
    for head in example.heads:
        assert head.weights[0] == [1.0, 0.0, 0.0, 0.0]
        assert head.outputs[0] == pytest.approx(list(explain.SEED_HEADS[head.head - 1]["v"][0]))
        assert all(head.weights[i][j] == 0.0 for i in range(4) for j in range(i + 1, 4))
    # Unmasked, "The" takes from every word.
    assert all(w > 0 for w in explain.attention_example().heads[0].weights[0])


def test_scaling_by_sqrt_dk_flattens_the_weights():
    plain, scaled = explain.attention_example(), explain.attention_example(scaled=True)
    assert scaled.heads[0].scores[0] == [0.5, 0.5, 1.0, 0.0]  # (1, 1, 2, 0) / sqrt(4)
    assert max(scaled.heads[0].weights[0]) < max(plain.heads[0].weights[0])


def pe(pos: int, column: int, dim: int) -> float:
    """The sinusoidal formula, written out: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) =
    cos(pos / 10000^(2i/d))."""
    i = column // 2
    angle = pos / 10000 ** (2 * i / dim)
    return math.sin(angle) if column % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize(("positions", "dim"), [(4, 4), (64, 32), (300, 6), (9, 5)])
def test_positional_table_is_the_sinusoidal_formula(positions, dim):
    table = explain.positional_table(positions, dim)
    assert len(table) == positions and all(len(row) == dim for row in table)
    for pos in sorted({0, 1, 2, 3, positions // 2, positions - 1}):
        for column in range(dim):
            assert table[pos][column] == pytest.approx(pe(pos, column, dim), abs=1e-6), (pos, column)


def test_positional_table_known_values():
    table = explain.positional_table(4, 4)
    assert table[0] == [0.0, 1.0, 0.0, 1.0]  # sin 0, cos 0
    assert table[1] == pytest.approx([0.841471, 0.540302, 0.010000, 0.999950], abs=1e-6)  # sin 1, cos 1, sin .01, cos .01
    assert table[3][0] == pytest.approx(0.141120, abs=1e-6) and table[3][1] == pytest.approx(-0.989992, abs=1e-6)
    assert round(table[1][2], 4) == 0.0100  # sin(1/100); the seed prints 0.001
    # Far along a wide table: position 100, d = 32, columns 2i = 8 and 2i+1 = 9: the angle is 100 / 10000^(8/32) = 10.
    wide = explain.positional_table(101, 32)
    assert wide[100][8] == pytest.approx(math.sin(10.0), abs=1e-6)
    assert wide[100][9] == pytest.approx(math.cos(10.0), abs=1e-6)
    with pytest.raises(PoetryError, match="positions"):
        explain.positional_table(0, 4)


def test_positional_example_adds_embeddings_and_names_the_seed_errors():
    example = explain.positional_example()
    assert example.words == ["The", "Cat", "Sat", "Mat"]
    assert example.embeddings[3] == [1.0, 0.0, 1.0, 0.0]
    assert example.inputs[1] == pytest.approx([math.sin(1), 1 + math.cos(1), math.sin(0.01), math.cos(0.01)])
    assert example.inputs[0] == [1.0, 1.0, 0.0, 2.0]
    wrong = {(c.position, c.dim): (c.seed, round(c.formula, 3)) for c in example.corrections}
    assert wrong == {(1, 2): (0.001, 0.01), (1, 3): (0.999, 1.0), (2, 2): (0.002, 0.02), (2, 3): (0.998, 1.0),
                     (3, 2): (0.003, 0.03), (3, 3): (0.997, 1.0)}
    assert "the seed prints 0.001, the formula gives 0.0100" in example.text()
    json.dumps(example.to_dict())


# --- the real model ------------------------------------------------------------------------------


def test_tokens_of_a_hemistich(poetry):
    report = explain.tokenize_text(poetry, "  الا يا ايها الساقي  ")  # Arabic yeh, stray spaces
    assert report.normalized == normalize("الا يا ايها الساقي") == "الا یا ایها الساقی"
    assert poetry.tokenizer.decode(report.ids) == report.normalized
    assert len(report.tokens) == len(report.ids) < len(report.char_tokens)
    assert report.char_tokens == list(report.normalized)
    assert (report.context_length, report.fits, report.overflow) == (256, True, 0)
    assert json.loads(json.dumps(report.to_dict(), ensure_ascii=False))["ids"] == report.ids


def test_tokens_over_the_limit_say_by_how_much(poetry):
    report = explain.tokenize_text(poetry, " ".join([HEMISTICH] * 30))
    assert not report.fits
    assert report.overflow == len(report.ids) - 256 > 0
    assert f"{report.overflow} over the limit of 256" in report.text()


def test_attention_trace_shape_mask_and_rows(poetry):
    trace = explain.attention_trace(poetry, HEMISTICH)
    weights = np.array(trace.weights)
    t = len(trace.ids)
    assert weights.shape == (6, 8, t, t)
    assert trace.ids == poetry.tokenizer.encode(HEMISTICH)
    assert trace.tokens == [poetry.tokenizer.id_to_token(i) for i in trace.ids]
    np.testing.assert_allclose(weights.sum(-1), np.ones((6, 8, t)), rtol=1e-5, atol=1e-5)
    assert (np.triu(weights, k=1) == 0).all()  # causal: nothing above the diagonal
    assert (weights[:, :, 0, 0] == 1).all()  # the first token can only attend to itself


def test_attention_trace_layer_one_by_hand(poetry):
    """Layer 1's weights recomputed from the weights of the model (as its state dict names them),
    in PyTorch, outside model.forward, for the block the shipped model has."""
    trace = explain.attention_trace(poetry, HEMISTICH)
    model, ids = poetry.model, torch.tensor(trace.ids)
    config = model.config
    weight = {name: torch.from_numpy(array) for name, array in model.weights.items()}
    t, c, h = len(ids), config.n_embd, config.n_head
    d = c // h
    with torch.no_grad():
        x = weight["token_embedding.weight"][ids]
        if config.positional == "sinusoidal":  # the table, added scaled by 1/sqrt(c)
            x = x + torch.tensor([[pe(pos, column, c) for column in range(c)] for pos in range(t)]) / math.sqrt(c)
        if config.norm == "rmsnorm":
            x = x / x.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * weight["blocks.0.ln1.weight"]
        else:
            x = torch.nn.functional.layer_norm(x, (c,), weight["blocks.0.ln1.weight"], weight.get("blocks.0.ln1.bias"))
        q, k, _ = (x @ weight["blocks.0.attn.qkv.weight"].T).split(c, dim=-1)
        q, k = (m.view(t, h, d).transpose(0, 1) for m in (q, k))
        if config.positional == "rotary":  # each pair (x_i, x_{i+d/2}) turned by pos / 10000^(2i/d)
            angle = torch.tensor([[pos / 10000 ** (2 * i / d) for i in range(d // 2)] for pos in range(t)])
            cos, sin = angle.cos(), angle.sin()
            q, k = (torch.cat([m[..., :d // 2] * cos + m[..., d // 2:] * sin,
                               m[..., d // 2:] * cos - m[..., :d // 2] * sin], dim=-1) for m in (q, k))
        if config.qk_norm:
            q, k = (m / m.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() for m in (q, k))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        expected = scores.softmax(-1)
    assert torch.allclose(torch.tensor(trace.weights[0]), expected, atol=1e-4)


def test_attention_trace_refuses_empty_and_too_long_text(poetry):
    with pytest.raises(PoetryError, match="empty"):
        explain.attention_trace(poetry, "hello world")
    with pytest.raises(PoetryError, match="at most 256"):
        explain.attention_trace(poetry, " ".join([HEMISTICH] * 30))


def test_generation_trace_draws_what_the_engine_draws(poetry):
    sampling = Sampling(temperature=0.9, top_k=40, top_p=0.9)
    trace = explain.generation_trace(poetry, "hafez", "ghazal", steps=20, sampling=sampling, seed=3)
    header = [poetry.tokenizer.token_to_id(t) for t in ("<|poem|>", "<|poet:hafez|>", "<|form:ghazal|>")]
    generator = new_generator(3)
    engine_tokens = list(Engine(poetry.model).stream(header, len(header), sampling, generator, 20))
    assert [s.chosen.id for s in trace.steps] == engine_tokens
    assert trace.prompt == ["<|poem|>", "<|poet:hafez|>", "<|form:ghazal|>"]
    assert trace.generated == poetry.tokenizer.decode(engine_tokens)
    assert [s.context for s in trace.steps] == list(range(3, 23))
    for step in trace.steps:
        probs = [c.probability for c in step.candidates]
        assert 1 <= len(probs) <= 5 and probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1 + 1e-6 and step.chosen.probability > 0
        assert step.limit == 256 and not step.window_shifted
    json.dumps(trace.to_dict(), ensure_ascii=False)


def test_generation_trace_greedy_with_top_k_one(poetry):
    trace = explain.generation_trace(poetry, steps=3, sampling=Sampling(top_k=1), seed=0)
    for step in trace.steps:
        assert len(step.candidates) == 1
        assert step.candidates[0].probability == 1.0
        assert step.chosen.id == step.candidates[0].id
        assert step.chosen.raw_probability < 1.0  # the filter, not the model, made it certain


def test_generation_trace_past_the_token_limit(small_poetry):
    sampling = Sampling(temperature=1.0, top_k=0, top_p=1.0)
    trace = explain.generation_trace(small_poetry, steps=40, sampling=sampling, seed=5)
    tok = small_poetry.tokenizer
    header = [tok.token_to_id(t) for t in ("<|poem|>", "<|poet:hafez|>", "<|form:ghazal|>")]
    expected = list(Engine(small_poetry.model).stream(header, 3, sampling, new_generator(5), 40))
    assert [s.chosen.id for s in trace.steps] == expected
    assert max(s.context for s in trace.steps) == 16
    shifted = [s for s in trace.steps if s.window_shifted]
    assert shifted and all(s.context == 3 + (16 - 3) // 2 for s in shifted)
    assert "window full" in trace.text()


def test_generation_trace_rejects_unknown_poet(poetry):
    with pytest.raises(PoetryError, match="unknown poet"):
        explain.generation_trace(poetry, poet="nobody")
    with pytest.raises(PoetryError, match="steps"):
        explain.generation_trace(poetry, steps=0)


# --- figures ---------------------------------------------------------------------------------------


def test_persian_labels_are_shaped_and_in_visual_order():
    from persian_poetry.explain.plots import display_text, persian_font

    # سلام: seen (initial), lam-alef (final ligature), meem (isolated), laid out right to left.
    assert display_text("سلام") == "\ufee1\ufefc\ufeb3"
    from matplotlib.ft2font import FT2Font

    charmap = FT2Font(persian_font().get_file()).get_charmap()
    assert all(ord(ch) in charmap for ch in display_text(HEMISTICH + " گل پژمرده چه"))


def test_attention_heat_maps_one_per_layer_with_persian_labels(tmp_path):
    from persian_poetry.assets import FONT_PATH
    from persian_poetry.explain.plots import attention_layer_figure, display_text, plot_attention_trace

    tokens = ["الا", " یا", " ایها", " الساقی"]
    weights = torch.rand(2, 3, 4, 4).tril().softmax(-1).tolist()
    trace = explain.AttentionTrace(tokens, [1, 2, 3, 4], weights)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        paths = plot_attention_trace(trace, tmp_path / "maps")
    assert [p.name for p in paths] == ["explain-attention-layer-1.png", "explain-attention-layer-2.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert not [w for w in record if "missing from" in str(w.message)]  # no glyph fell back to boxes
    fig = attention_layer_figure(trace, 2)
    assert sum(ax.get_visible() for ax in fig.axes) == 3 + 1  # three heads and the colour bar
    labels = fig.axes[0].get_yticklabels()
    assert [label.get_text() for label in labels] == [display_text("الا")] + [
        display_text("\u00b7" + t[1:]) for t in tokens[1:]]
    assert all(Path(label.get_fontproperties().get_file()) == FONT_PATH for label in labels)


def test_example_and_positional_figures(tmp_path):
    from persian_poetry.explain.plots import plot_attention_example, plot_positional

    a = plot_attention_example(explain.attention_lesson(), tmp_path / "example.png")
    b = plot_positional(explain.positional_table(64, 32), tmp_path / "pe.png", scale=1 / math.sqrt(32))
    assert a.stat().st_size > 10_000 and b.stat().st_size > 5_000


# --- the command ---------------------------------------------------------------------------------


def test_cli_positional_prints_the_table_and_the_corrections(capsys, tmp_path):
    assert main(["explain", "positional", "--positions", "4", "--dim", "4", "--plot", str(tmp_path / "pe.png")]) == 0
    out = capsys.readouterr().out
    assert "pos   1  0.8415  0.5403  0.0100  0.9999" in out
    assert "PE(1,2): the seed prints 0.001, the formula gives 0.0100" in out
    assert (tmp_path / "pe.png").stat().st_size > 10_000


def test_the_positional_plot_draws_a_rotary_models_angles(tiny_model_dir, tmp_path, monkeypatch):
    import matplotlib.figure

    drawn = {}
    real_imshow = matplotlib.axes.Axes.imshow

    def imshow(self, table, *args, **kwargs):
        drawn["table"] = np.asarray(table)
        return real_imshow(self, table, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", imshow)
    assert main(["explain", "positional", "--plot", str(tmp_path / "rope.png")]) == 0  # the shipped model
    config = load_model().config
    assert config.positional == "rotary"
    head_dim = config.n_embd // config.n_head
    assert drawn["table"].shape == (config.context_length, head_dim)
    angle = 5 / 10000 ** (2 * 3 / head_dim)  # position 5, pair 3
    assert drawn["table"][5, 6] == pytest.approx(math.sin(angle), abs=1e-6)
    assert drawn["table"][5, 7] == pytest.approx(math.cos(angle), abs=1e-6)
    assert (tmp_path / "rope.png").stat().st_size > 10_000
    assert main(["explain", "positional", "--model", str(tiny_model_dir), "--plot", str(tmp_path / "pe.png")]) == 0
    tiny = load_model(tiny_model_dir).config
    assert drawn["table"].shape == (tiny.context_length, tiny.n_embd)  # a sinusoidal model: its whole width


def test_cli_attention_example(capsys, tmp_path):
    assert main(["explain", "attention", "--example", "--plot", str(tmp_path / "ex.png")]) == 0
    out = capsys.readouterr().out
    assert "0.197  0.197  0.534  0.072" in out and "the seed prints 0.24, 0.24, 0.52, 0.10" in out
    assert "sqrt(d_k) = sqrt(4)" in out and "causal mask" in out
    assert (tmp_path / "ex.png").exists()


def test_cli_tokens_attention_generate(capsys):
    assert main(["explain", "tokens", HEMISTICH]) == 0
    assert "of 256 tokens; it fits" in capsys.readouterr().out
    assert main(["explain", "attention", "--text", "الا یا", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["weights"]) == 6 and len(data["weights"][0]) == 8
    assert main(["explain", "generate", "--steps", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("context ") == 3 and "/256" in out


@pytest.mark.parametrize("argv", [["attention", "--text", "abc"], ["attention", "--text", "الا", "--layer", "7"],
                                  ["generate", "--top-p", "0"], ["positional", "--dim", "0"]])
def test_cli_errors_are_one_line(capsys, argv):
    assert main(["explain", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("persian-poetry explain: error:") and err.count("\n") == 1


def test_the_seeds_tables_give_the_recomputed_output_for_the():
    # By hand: weights softmax(1, 1, 2, 0), values of the seed's head 1 (The, Cat, Sat, Mat).
    e = [math.exp(x) for x in (1, 1, 2, 0)]
    w = [x / sum(e) for x in e]
    values = [(1, 0, 0, 1), (0, 2, 0, 0), (0, 0, 3, 0), (4, 0, 0, 0)]
    want = [sum(w[j] * values[j][c] for j in range(4)) for c in range(4)]
    assert want == pytest.approx([0.486, 0.393, 1.603, 0.197], abs=1e-3)  # ../shared/REFERENCE.md
    assert explain.attention_example().heads[0].outputs[0] == pytest.approx(want)
    text = explain.attention_example().text()
    assert "the seed prints [0.64, 0.48, 1.56, 0.24]" in text and "assumes" in text
