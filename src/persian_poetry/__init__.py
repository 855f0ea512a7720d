"""Persian Poetry GPT: a GPT written and trained from scratch that writes classical Persian poetry.

The public API, imported lazily so that `import persian_poetry` (and `persian-poetry --help`)
does not pay for torch until a model is needed:

    from persian_poetry import load_model, write_poem, PoemRequest
    poetry = load_model()                      # the shipped default model
    poem = write_poem(poetry, PoemRequest(poet="hafez", form="ghazal", couplets=7, seed=1))
    print(poem.text())
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "normalize": "text", "ALPHABET": "text",
    "Poem": "generate", "PoemRequest": "generate", "write_poem": "generate", "FORM_COUPLETS": "generate",
    "load_model": "checkpoint", "PoetryModel": "checkpoint", "ModelLoadError": "checkpoint",
    "save_model_dir": "checkpoint", "DEFAULT_MODEL_DIR": "checkpoint",
    "PoetryError": "errors",
    "CharTokenizer": "tokenizer", "BPETokenizer": "tokenizer", "load_tokenizer": "tokenizer",
    "train_tokenizer": "tokenizer", "TokenizerError": "tokenizer",
    "Controls": "controls",
    "read_jsonl": "corpus", "read_plain_text": "corpus", "split_of": "corpus", "CLASSICAL_POETS": "corpus",
    "CorpusPoem": "corpus",
    "GPT": "model", "GPTConfig": "model", "sinusoidal_table": "model", "rotary_tables": "model",
    "Engine": "engine", "Sampling": "engine",
    "TrainConfig": "train", "train": "train", "config_with_preset": "train",
    "EvalResult": "evaluate", "evaluate_file": "evaluate", "evaluate_split": "evaluate",
    "OFFERED_POETS": "corpus", "classify_poet": "poet", "load_poet_classifier": "poet",
    "tokenize_text": "explain", "TokenReport": "explain", "positional_table": "explain",
    "positional_example": "explain", "attention_example": "explain", "attention_trace": "explain",
    "AttentionTrace": "explain", "generation_trace": "explain", "GenerationTrace": "explain",
    "create_app": "server",
    "StylePrior": "style", "build_style": "style", "load_style": "style",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'persian_poetry' has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    value = getattr(module, "Poem" if name == "CorpusPoem" else name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
