"""The configurations: the network's (`GPTConfig`, read by the PyTorch model and by the numpy
inference runtime alike) and the `train` command's (`TrainConfig`, its recorded presets, and the
option help that the command line is built from). No torch here, so `persian-poetry train --help`
and writing a poem stay free of it."""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

POSITIONAL_KINDS = ("sinusoidal", "learned", "rotary")
NORM_KINDS = ("layernorm", "rmsnorm")
MLP_KINDS = ("gelu", "relu2", "swiglu")


@dataclass
class GPTConfig:
    vocab_size: int = 512
    context_length: int = 256  # the token limit: prompt + output never exceed it
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 192
    dropout: float = 0.0  # on embeddings and on each residual branch
    # On the attention weights. Kept apart because on a CPU it is costly: with it, attention leaves
    # the fused kernel for the spelled-out one (0.66 vs 0.45 s a step for the notebook preset).
    attention_dropout: float = 0.0
    # "sinusoidal" (the seed's formula, added to the embeddings), "learned" (a trained table, added)
    # or "rotary" (RoPE: queries and keys turned by an angle that grows with position, so attention
    # scores depend on how far apart two tokens are, not on where they stand).
    positional: str = "sinusoidal"
    bias: bool = False
    norm: str = "layernorm"  # or "rmsnorm": no mean subtracted, no bias
    mlp: str = "gelu"  # "relu2": relu(x)^2; "swiglu": silu(gate) * value, 8/3 C wide so the size stays 8 C^2
    qk_norm: bool = False  # RMS-normalize each head's queries and keys before their dot product
    tie_embeddings: bool = True  # the output layer reads with the token embedding's matrix
    logit_softcap: float = 0.0  # > 0: logits = cap * tanh(logits / cap)

    def __post_init__(self):
        for name, value, kinds in (("norm", self.norm, NORM_KINDS), ("mlp", self.mlp, MLP_KINDS)):
            if value not in kinds:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, kinds))}, not {value!r}")
        if self.logit_softcap < 0:
            raise ValueError(f"logit_softcap must be >= 0, not {self.logit_softcap}")
        if self.positional not in POSITIONAL_KINDS:
            raise ValueError(f"positional must be one of {', '.join(map(repr, POSITIONAL_KINDS))}, "
                             f"not {self.positional!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.positional == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rotary positions need an even head size, not {self.n_embd // self.n_head}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mlp_hidden(self) -> int:
        if self.mlp == "swiglu":
            return 16 * round(8 * self.n_embd / 3 / 16)  # two input matrices: 3 C h ~ 8 C^2, as 4 C wide
        return 4 * self.n_embd

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def position_width(self) -> int:
        """Columns of the model's positional table as explain shows it: the width it adds a table
        to, or with rotary positions one head's (the angles its queries and keys are turned by)."""
        return self.head_dim if self.positional == "rotary" else self.n_embd

    @classmethod
    def from_dict(cls, data: dict) -> GPTConfig:
        # Unknown keys (from a newer version) are ignored; missing keys take today's defaults.
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})



def option(default, help_text: str):
    """A config field with the help text of its command-line option."""
    return field(default=default, metadata={"help": help_text})


SHARED_DATA = Path("../shared/data")


@dataclass
class TrainConfig:
    data: str = option(str(SHARED_DATA / "ganjoor" / "poems.jsonl.gz"), "corpus: Ganjoor-schema JSONL(.gz), a folder from prepare-data "
                                                                   "(its own tokenizer and poets), or a .txt split 90/10 by position")
    out_dir: str = option("runs/default", "run directory: checkpoint.pt and model/ (default runs/default)")
    poets: str = option("classical", "'classical' (default), 'all', or comma-separated poet slugs")
    tokenizer: str = option("char", "'char' or a tokenizer JSON from train-tokenizer")
    # model
    n_layer: int = option(6, "transformer blocks")
    n_head: int = option(6, "attention heads per block")
    n_embd: int = option(192, "embedding width")
    context_length: int = option(256, "token limit of the model")
    dropout: float = option(0.0, "dropout rate of embeddings and residual branches")
    attention_dropout: float = option(0.0, "dropout rate of attention weights (slow on a CPU)")
    positional: str = option("sinusoidal", "'sinusoidal', 'learned' or 'rotary'")
    norm: str = option("layernorm", "'layernorm' or 'rmsnorm'")
    mlp: str = option("gelu", "feed-forward: 'gelu', 'relu2' or 'swiglu'")
    qk_norm: bool = option(False, "RMS-normalize queries and keys")
    untied: bool = option(False, "an output layer of its own instead of the token embedding's matrix")
    logit_softcap: float = option(0.0, "cap * tanh(logits / cap) when > 0")
    # optimisation
    batch_size: int = option(32, "sequences per step (per process)")
    learning_rate: float = option(2e-3, "peak learning rate")
    min_learning_rate: float = option(2e-4, "learning rate at the end of the decay")
    warmup_steps: int = option(200, "linear warm-up steps (again after a resume from model weights alone)")
    schedule: str = option("cosine", "'cosine': decay over max_steps or the time budget; 'wsd': warm-up, then "
                                     "the peak rate for as long as --resume extends the run, then a decay leg "
                                     "of --decay-steps")
    decay_steps: int = option(0, "wsd: begin the final decay leg now and train this many more steps "
                                 "(0: stay at the peak rate)")
    max_steps: int = option(5000, "stop after this many steps")
    time_budget: float | None = option(None, "stop after this many seconds of training (the schedule fits itself to it)")
    weight_decay: float = option(0.1, "AdamW weight decay of matrices")
    grad_clip: float = option(1.0, "gradient norm clip")
    # bookkeeping
    eval_interval: int = option(250, "steps between validations")
    eval_poems: int = option(300, "validation poems scored at each interval")
    checkpoint_interval: int = option(250, "steps between checkpoints")
    seed: int = option(1337, "random seed")
    device: str = option("auto", "'auto', 'cpu', 'cuda', 'cuda:1', ...")
    threads: int | None = option(None, "torch CPU threads")
    cache_dir: str | None = option(None, "where encoded corpora are cached (default ~/.cache/persian-poetry)")
    resume: bool = option(False, "continue from out_dir/checkpoint.pt")
    progress: bool = True
    preset: str | None = None


PRESETS: dict[str, dict] = {
    # The original notebook's corpus and split (90/10 by position), for the like-for-like figure.
    # Rotary positions learn far faster here than the added table, and then overfit the verse sooner,
    # so dropout 0.25 (at 0.1 the val loss stopped falling by step 2,000; at 0.2 it rose again in
    # the last steps of a fast run). Dropout on the residual branches only: on a CPU, dropout on the
    # attention weights took a third of each step. Learning rate 4e-3: with only a few thousand
    # steps in the budget, 3e-3 was behind at every validation. (BENCHMARKS.md, the notebook section.)
    "notebook": dict(data=str(SHARED_DATA / "seed" / "hafez_khayyam.txt"), tokenizer="char", out_dir="runs/notebook",
                     n_layer=4, n_head=4, n_embd=128, context_length=256, dropout=0.25, attention_dropout=0.0,
                     positional="rotary", batch_size=16, learning_rate=4e-3, min_learning_rate=1e-4,
                     warmup_steps=100, max_steps=1_000_000, time_budget=1800, eval_interval=500,
                     checkpoint_interval=500),
    # The shipped default model: classical poets of Ganjoor, BPE tokenizer.
    "default": dict(poets="classical", tokenizer="runs/tokenizer-bpe4k.json", out_dir="runs/default",
                    n_layer=6, n_head=8, n_embd=256, context_length=256, dropout=0.0, batch_size=24,
                    learning_rate=2e-3, min_learning_rate=1e-4, warmup_steps=200, max_steps=1_000_000,
                    time_budget=6000, eval_interval=500, checkpoint_interval=500),
}


def config_with_preset(preset: str | None, **overrides) -> TrainConfig:
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from: {', '.join(PRESETS)}")
    values = {**(PRESETS[preset] if preset else {}), **{k: v for k, v in overrides.items() if v is not None}}
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    values["preset"] = preset
    return TrainConfig(**values)


def command_line_options() -> list[tuple[str, type, str]]:
    """(field name, value type, help) of every `TrainConfig` field that is a command-line option."""
    hints = typing.get_type_hints(TrainConfig)
    options = []
    for f in fields(TrainConfig):
        if "help" not in f.metadata:
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # `float | None`: the option takes a float
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        options.append((f.name, kind, f.metadata["help"]))
    return options
