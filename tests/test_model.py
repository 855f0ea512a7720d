import math

import numpy as np
import pytest
import torch
from conftest import inference_of

from persian_poetry.gpt.engine import Engine, Sampling, filter_logits, new_generator, sample, sample_rows
from persian_poetry.gpt.model import GPT, GPTConfig, KVCache, _activation, apply_rotary, rotary_tables, sinusoidal_table


def small(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**dict(vocab_size=50, context_length=24, n_layer=2, n_head=2, n_embd=16), **kw})).eval()


def test_sinusoidal_table_follows_the_formula():
    table = sinusoidal_table(4, 4)
    for pos in range(4):
        for i in range(2):
            angle = pos / 10000 ** (2 * i / 4)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    # The seed document prints 0.001 here; the formula gives sin(1/100).
    assert table[1, 2].item() == pytest.approx(0.0100, abs=1e-4)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rotary"])
def test_kv_cache_gives_the_same_logits_as_a_full_forward(positional):
    model = small(positional=positional)
    x = torch.randint(0, 50, (2, 12))
    full, _, _ = model(x)
    cache = KVCache(model.config, 2, "cpu", torch.float32)
    parts = [model(x[:, :5], cache=cache)[0]] + [model(x[:, t:t + 1], cache=cache)[0] for t in range(5, 12)]
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("positional,bias,int8", [("sinusoidal", False, False), ("learned", True, False),
                                                  ("sinusoidal", False, True), ("rotary", False, False),
                                                  ("rotary", True, True)])
def test_decode_step_gives_forwards_logits(positional, bias, int8):
    from persian_poetry.gpt.checkpoint import quantize_int8

    model = small(positional=positional, bias=bias)
    if int8:
        quantize_int8(model)  # decode_step must call the quantized layers, not their float weights
    x = torch.randint(0, 50, (3, 12))
    # int8 layers quantize their input on the fly, per call: compare with forward one token at a time.
    reference = KVCache(model.config, 3, "cpu", torch.float32)
    full = torch.cat([model(x[:, :5], cache=reference)[0]] +
                     [model(x[:, t:t + 1], cache=reference)[0] for t in range(5, 12)], dim=1)
    cache = KVCache(model.config, 3, "cpu", torch.float32)
    model(x[:, :5], cache=cache)
    steps = torch.stack([model.decode_step(x[:, t:t + 1], cache) for t in range(5, 12)], dim=1)
    assert cache.length == 12
    assert torch.allclose(steps, full[:, 5:], atol=1e-5)
    with pytest.raises(ValueError, match="context length"):
        for t in range(12, model.config.context_length + 1):
            model.decode_step(x[:, :1], cache)


@pytest.mark.parametrize("positional", ["sinusoidal", "rotary"])
def test_decode_step_follows_weights_changed_after_an_earlier_decode(positional):
    # decode_step reads its own (in, out) copies of the weights; a training step in between must not
    # leave a later generation decoding with the old ones.
    model = small(positional=positional)
    x = torch.randint(0, 50, (2, 6))

    def last_step_logits():
        cache = KVCache(model.config, 2, "cpu", torch.float32)
        model(x[:, :5], cache=cache)
        return model.decode_step(x[:, 5:], cache)

    before = last_step_logits()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x, x)[1].backward()
    optimizer.step()
    after = last_step_logits()
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, model(x)[0][:, 5], atol=1e-5)


@pytest.mark.parametrize("positional", ["sinusoidal", "rotary"])
def test_attention_weights_are_causal_distributions_and_match_the_fused_path(positional):
    model = small(positional=positional)
    x = torch.randint(0, 50, (1, 10))
    fused, _, _ = model(x)
    logits, _, weights = model(x, return_weights=True)
    assert torch.allclose(fused, logits, atol=1e-5)
    assert len(weights) == 2 and weights[0].shape == (1, 2, 10, 10)
    for w in weights:
        assert torch.allclose(w.sum(-1), torch.ones(1, 2, 10), atol=1e-5)
        assert torch.all(w.triu(diagonal=1) == 0)  # no token looks ahead


def test_rotary_scores_depend_only_on_the_distance_between_tokens():
    cos, sin = rotary_tables(64, 8)
    torch.manual_seed(1)
    q, k = torch.randn(1, 8), torch.randn(1, 8)

    def score(m: int, n: int) -> float:
        return (apply_rotary(q, cos[m:m + 1], sin[m:m + 1]) @ apply_rotary(k, cos[n:n + 1], sin[n:n + 1]).T).item()

    assert score(10, 3) == pytest.approx(score(40, 33), abs=1e-5) == pytest.approx(score(7, 0), abs=1e-5)
    assert score(10, 3) != pytest.approx(score(10, 4), abs=1e-3)
    assert torch.allclose(apply_rotary(q, cos[:1], sin[:1]), q)  # position 0 is not turned
    turned = apply_rotary(q, cos[5:6], sin[5:6])
    assert turned.norm().item() == pytest.approx(q.norm().item(), rel=1e-6)  # a rotation keeps lengths


def test_a_rotary_model_adds_no_position_table_and_reads_the_same_text_alike_anywhere():
    model = small(positional="rotary")
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.mul_(50)  # sharp attention: at init every token is looked at alike
    assert model.positional_encoding(0, 4) is None
    assert not any("rotary" in name or "position" in name for name in model.state_dict())  # made, not saved
    x = model.token_embedding(torch.randint(0, 50, (1, 6)))

    def blocks_at(start: int) -> torch.Tensor:
        h, rotary = x, (model.rotary_cos[start:start + 6], model.rotary_sin[start:start + 6])
        for layer, block in enumerate(model.blocks):
            h, _ = block(h, layer, rotary=rotary)
        return h

    assert torch.allclose(blocks_at(0), blocks_at(9), atol=1e-5)  # only distances between tokens count
    plain = x
    for layer, block in enumerate(model.blocks):
        plain, _ = block(plain, layer)
    assert not torch.allclose(blocks_at(0), plain, atol=1e-4)


def test_output_weights_are_tied_and_loss_ignores_minus_one():
    model = small()
    assert model.lm_head.weight is model.token_embedding.weight
    x = torch.randint(0, 50, (1, 8))
    y = x.clone()
    y[0, :4] = -1
    _, loss, _ = model(x, y)
    logits, _, _ = model(x)
    expected = torch.nn.functional.cross_entropy(logits[0, 4:], y[0, 4:])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_config_and_context_errors():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="positional"):
        GPTConfig(positional="alibi")
    with pytest.raises(ValueError, match="even head size"):
        GPTConfig(n_embd=6, n_head=2, positional="rotary")
    with pytest.raises(ValueError, match="context length"):
        small()(torch.zeros(1, 25, dtype=torch.long))
    assert GPTConfig.from_dict({"n_layer": 3, "from_the_future": 1}).n_layer == 3


@pytest.mark.parametrize("sampling", [Sampling(0.8, 50, 0.95), Sampling(1.3, 5, 1.0), Sampling(0.7, 0, 0.6),
                                      Sampling(1.0, 0, 1.0)])
def test_sample_draws_from_the_filtered_distribution(sampling):
    """`sample` looks only at the top-k; its draws must follow filter_logits' distribution."""
    torch.manual_seed(1)
    logits = (torch.randn(300) * 2).numpy()
    logits[7] = -np.inf  # a banned token (constrained decoding masks with -inf)
    expected = torch.from_numpy(filter_logits(logits, sampling)).softmax(-1).numpy()
    generator = new_generator(0)
    n = 20_000
    counts = np.bincount([sample(logits, sampling, generator) for _ in range(n)], minlength=300)
    assert counts[expected == 0].sum() == 0  # never a filtered-out token
    assert np.abs(counts / n - expected).max() < 0.015
    rows = np.stack([logits, logits[::-1]])  # the batched sampler: each row its own distribution
    drawn = np.stack([sample_rows(rows, sampling, generator) for _ in range(n // 4)], axis=1)
    assert drawn.shape == (2, n // 4)
    for row, want in zip(drawn, (expected, expected[::-1]), strict=True):
        got = np.bincount(row, minlength=300) / row.size
        assert got[want == 0].sum() == 0 and np.abs(got - want).max() < 0.03


def test_filter_logits_top_k_and_top_p():
    logits = np.array([4.0, 3.0, 2.0, 1.0, 0.0], dtype=np.float32)
    kept = filter_logits(logits, Sampling(temperature=1.0, top_k=2, top_p=1.0))
    assert np.isfinite(kept).tolist() == [True, True, False, False, False]
    probs = torch.from_numpy(logits).softmax(-1)  # 0.636, 0.234, 0.086, ...
    kept = filter_logits(logits, Sampling(temperature=1.0, top_k=0, top_p=0.8))
    assert np.isfinite(kept).tolist() == [True, True, False, False, False]
    assert probs[:1].sum() < 0.8 <= probs[:2].sum()
    with pytest.raises(ValueError):
        Sampling(temperature=0)
    with pytest.raises(ValueError):
        Sampling(top_p=1.5)


def test_engine_is_seeded_and_slides_past_the_token_limit():
    engine = Engine(inference_of(small()))

    def run(seed):
        return list(engine.stream([1, 2, 3, 4], 4, Sampling(1.0, 0, 1.0), new_generator(seed), max_new_tokens=60))

    first = run(3)
    assert len(first) == 60  # 64 tokens in a 24-token context: the window slid
    assert first == run(3)
    assert first != run(4)


def test_engine_matches_recomputing_the_window_at_each_step():
    """With temperature near 0 (greedy), cached decoding on the numpy network equals a naive full
    forward of the PyTorch model per step."""
    model = small()
    prompt, pinned = [5, 6, 7], 3
    cached = list(Engine(inference_of(model)).stream(prompt, pinned, Sampling(1e-6, 1, 1.0), new_generator(0),
                                                     max_new_tokens=15))
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(15):
            logits, _, _ = model(torch.tensor([tokens]))
            tokens.append(int(logits[0, -1].argmax()))
    assert cached == tokens[3:]


def test_attention_dropout_is_its_own_rate_and_only_in_training():
    x = torch.randint(0, 50, (2, 12))
    for kw, random_in_training in [(dict(), False), (dict(attention_dropout=0.5), True), (dict(dropout=0.5), True)]:
        model = small(**kw)
        assert torch.equal(model(x)[0], model(x)[0])  # eval: no dropout at all
        model.train()
        assert torch.equal(model(x)[0], model(x)[0]) is not random_in_training, kw
    attention = small(attention_dropout=0.5).blocks[0].attn
    assert attention.attention_dropout == 0.5 and small(dropout=0.5).blocks[0].attn.attention_dropout == 0.0
    # Configs written before the field existed load with no attention dropout.
    assert GPTConfig.from_dict({"vocab_size": 50, "dropout": 0.1}).attention_dropout == 0.0



ARCHITECTURES = [dict(norm="rmsnorm"), dict(mlp="relu2"), dict(mlp="swiglu"), dict(qk_norm=True),
                 dict(tie_embeddings=False), dict(logit_softcap=0.1),
                 dict(norm="rmsnorm", mlp="swiglu", qk_norm=True, tie_embeddings=False, logit_softcap=15.0,
                      positional="rotary")]


@pytest.mark.parametrize("options", ARCHITECTURES)
def test_each_architecture_option_decodes_as_forward_and_changes_the_model(options):
    model = small(**options)
    plain = small(**{k: v for k, v in options.items() if k == "positional"})
    x = torch.randint(0, 50, (2, 12))
    full, _, _ = model(x)
    cache = KVCache(model.config, 2, "cpu", torch.float32)
    model(x[:, :5], cache=cache)
    steps = torch.stack([model.decode_step(x[:, t:t + 1], cache) for t in range(5, 12)], dim=1)
    assert torch.allclose(steps, full[:, 5:], atol=1e-5)
    assert not torch.allclose(full, plain(x)[0], atol=1e-3)  # the option is not ignored
    assert (model.lm_head.weight is model.token_embedding.weight) == model.config.tie_embeddings


def test_architecture_options_by_known_values():
    h = torch.tensor([[-2.0, -0.5, 0.5, 3.0]])
    assert torch.equal(_activation("relu2", h), torch.tensor([[0.0, 0.0, 0.25, 9.0]]))
    gate, value = torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 3.0]])
    assert torch.allclose(_activation("swiglu", torch.cat([gate, value], -1)), torch.tensor([[0.0, 3 / (1 + math.exp(-1))]]))
    capped = small(logit_softcap=2.0)
    logits = capped(torch.randint(0, 50, (1, 8)))[0]
    assert logits.abs().max() < 2.0
    assert GPTConfig(n_embd=192, mlp="swiglu").mlp_hidden == 512  # 8/3 x 192, so 3 C h = 8 C^2
    with pytest.raises(ValueError, match="mlp must be one of"):
        GPTConfig(mlp="tanh")
