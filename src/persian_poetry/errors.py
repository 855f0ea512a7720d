"""Every error type of the package. Users catch `PoetryError`: bad input they can fix, with a
message that says what was wrong and what is accepted."""


class PoetryError(ValueError):
    """Bad input (an unknown poet, an impossible option, a damaged file), with a message that says
    what was wrong and what is accepted."""


class ModelLoadError(PoetryError):
    """A model directory that is missing, incomplete or damaged."""


class TokenizerError(PoetryError):
    """A tokenizer file that cannot be read, or a token that is not in the vocabulary."""


class CorpusError(PoetryError):
    """A corpus file that holds no poems at all, or cannot be read (a damaged .gz, a directory)."""


class MetreError(PoetryError):
    """A metre that cannot be parsed into feet, or a name that fits no metre, or several."""


class ExportError(PoetryError):
    """The export cannot be made (transformers missing, a quantized model, ...)."""
