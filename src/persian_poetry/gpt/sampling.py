"""The sampling settings of every decoder, with their defaults (one source: the command line, the
web API, the Python API and the Hugging Face export all read them here). No torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_k: int = 50  # 0: no top-k filter
    top_p: float = 0.95  # 1.0: no nucleus filter

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
