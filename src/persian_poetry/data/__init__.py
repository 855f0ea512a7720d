"""The corpus and what the model reads: Ganjoor poems, the control header, tokenizers, encoded splits."""
