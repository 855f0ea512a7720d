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
    "PoetryError": "errors", "ModelLoadError": "errors", "TokenizerError": "errors",
    "DEFAULT_MODEL_DIR": "assets",
    "Controls": "data.controls",
    "read_jsonl": "data.corpus", "read_plain_text": "data.corpus", "split_of": "data.corpus",
    "CLASSICAL_POETS": "data.corpus", "OFFERED_POETS": "data.corpus", "CorpusPoem": "data.corpus",
    "CharTokenizer": "data.tokenizer", "BPETokenizer": "data.tokenizer", "load_tokenizer": "data.tokenizer",
    "train_tokenizer": "data.tokenizer",
    "GPT": "gpt.model", "GPTConfig": "gpt.model", "sinusoidal_table": "gpt.model", "rotary_tables": "gpt.model",
    "Engine": "gpt.engine", "Sampling": "gpt.engine",
    "save_model_dir": "gpt.checkpoint",
    "TrainConfig": "gpt.config", "config_with_preset": "gpt.config", "train": "gpt.train",
    "EvalResult": "gpt.evaluate", "evaluate_file": "gpt.evaluate", "evaluate_split": "gpt.evaluate",
    "scan": "prosody.scan",
    "load_model": "writing.bundle", "PoetryModel": "writing.bundle",
    "Poem": "writing.generate", "PoemRequest": "writing.generate", "write_poem": "writing.generate",
    "FORM_COUPLETS": "writing.generate",
    "StylePrior": "writing.style", "build_style": "writing.style", "load_style": "writing.style",
    "classify_poet": "judges.poet", "load_poet_classifier": "judges.poet",
    "tokenize_text": "explain.lesson", "TokenReport": "explain.lesson", "positional_table": "explain.lesson",
    "positional_example": "explain.lesson", "attention_example": "explain.lesson",
    "attention_trace": "explain.lesson", "AttentionTrace": "explain.lesson",
    "generation_trace": "explain.lesson", "GenerationTrace": "explain.lesson",
    "create_app": "serve.app",
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
