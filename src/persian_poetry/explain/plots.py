"""Figures for explain mode: the positional heat map and attention heat maps.

Matplotlib (Agg, no display) draws text glyph by glyph, left to right: it neither joins the
letters of Arabic script nor lays right-to-left text out from the right. So every Persian label
is first shaped with `arabic_reshaper` (each letter takes its initial, medial, final or isolated
form) and reordered with `python-bidi` (into the visual order of the screen), then drawn in the
Vazirmatn font shipped in the package, because a system font may have no Persian glyphs at all.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from arabic_reshaper import ArabicReshaper
from bidi.algorithm import get_display
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from ..assets import FONT_PATH
from .lesson import AttentionExample, AttentionTrace


@lru_cache(maxsize=1)
def persian_font() -> FontProperties:
    return FontProperties(fname=FONT_PATH)


@lru_cache(maxsize=1)
def _reshaper():

    # Keep the vowel marks (the default deletes them): in verse they change the metre.
    return ArabicReshaper(configuration={"delete_harakat": False})


def display_text(text: str) -> str:
    """`text` in the visual order and joined letter forms matplotlib needs to show it right."""

    return get_display(_reshaper().reshape(text))


def token_label(token: str) -> str:
    """A token as an axis label: its leading space shown as a middle dot, ZWNJ as a small bar,
    a piece of a split letter as a replacement mark."""
    shown = token.replace("\u200c", "\u00a6")
    if shown.startswith(" "):
        shown = "\u00b7" + shown[1:]
    return display_text(shown)


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def plot_positional(table: list[list[float]], path: str | Path, scale: float | None = None,
                    rotary: bool = False) -> Path:
    """The familiar heat map: one row per position, one column per dimension. With `rotary`, the
    table is a head's (dim = the head's width): the sines and cosines of the angles by which rotary
    positions turn each pair of a query's and a key's numbers."""
    positions, dim = len(table), len(table[0])
    fig = Figure(figsize=(7.5, 6), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(table, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="PE(pos, i)")
    ax.set_xlabel("dimension i (even: sin, odd: cos; the wavelength grows with i)")
    ax.set_ylabel("position pos")
    title = f"Sinusoidal positional encoding, {positions} positions x {dim} dimensions"
    if rotary:
        title = (f"Rotary positions: sin and cos of pos / 10000^(2i/{dim}), {positions} positions x {dim // 2} "
                 f"angles\n(each head turns pair i of its query and key by angle i; nothing is added)")
    elif scale is not None:
        title += f"\n(the model adds it scaled by 1/sqrt({dim}) = {scale:.4f})"
    ax.set_title(title)
    return _save(fig, path)


def _heat_map(ax, weights, labels: list[str] | None, title: str, annotate: bool = False):
    n = len(weights)
    image = ax.imshow(weights, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    if labels is not None:
        font = persian_font()
        ax.set_xticklabels(labels, fontproperties=font, rotation=90, fontsize=10)
        ax.set_yticklabels(labels, fontproperties=font, fontsize=10)
    if annotate:
        for q in range(n):
            for k in range(n):
                value = weights[q][k]
                ax.text(k, q, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value < 0.6 else "black")
    return image


def plot_attention_example(examples: list[AttentionExample], path: str | Path) -> Path:
    """The seed example's weights: one row per variant (seed, scaled, causal), one column per head."""
    heads = len(examples[0].heads)
    fig = Figure(figsize=(3.2 * heads, 3.0 * len(examples)), layout="constrained")
    axes = fig.subplots(len(examples), heads, squeeze=False)
    for row, example in zip(axes, examples, strict=True):
        variant = ("scaled" if example.scaled else "unscaled, as the seed") + (" + causal mask" if example.causal else "")
        for ax, head in zip(row, example.heads, strict=True):
            image = _heat_map(ax, head.weights, None, f"head {head.head}: {variant}", annotate=True)
            ax.set_xticklabels(example.words)
            ax.set_yticklabels(example.words)
    fig.suptitle("The seed's example: attention weights (row: query, column: key); scaled = divided by sqrt(d_k)")
    fig.colorbar(image, ax=axes, label="attention weight", shrink=0.6)
    return _save(fig, path)


def attention_layer_figure(trace: AttentionTrace, layer: int) -> Figure:
    """All heads of one layer (1-based) side by side. Rows are queries, columns keys, both in
    reading order (token 0 at the top and at the left); the empty upper triangle is the causal mask."""
    labels = [token_label(t) for t in trace.tokens]
    heads = trace.weights[layer - 1]
    cols = min(4, len(heads))
    rows = -(-len(heads) // cols)
    side = max(3.0, 0.25 * len(labels) + 1.4)
    fig = Figure(figsize=(cols * side, rows * side + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for head, (ax, weights) in enumerate(zip(axes, heads, strict=False), start=1):
        image = _heat_map(ax, weights, labels, f"head {head}")
    for ax in axes[len(heads):]:
        ax.set_visible(False)
    fig.suptitle(f"Attention weights, layer {layer} of {len(trace.weights)} (row: query, column: key)")
    fig.colorbar(image, ax=axes.tolist(), shrink=0.6)
    return fig


def plot_attention_trace(trace: AttentionTrace, directory: str | Path, prefix: str = "explain-attention") -> list[Path]:
    """One PNG per layer, all heads side by side: `{prefix}-layer-{n}.png` in `directory`."""
    return [_save(attention_layer_figure(trace, layer), Path(directory) / f"{prefix}-layer-{layer}.png")
            for layer in range(1, len(trace.weights) + 1)]
