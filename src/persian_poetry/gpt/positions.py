"""Where a token stands, as numbers: the sinusoidal table and the rotary angles (numpy, float32).

One formula for both: angle(pos, i) = pos / 10000^(2i/d). The sinusoidal encoding adds
sin/cos of it to the embeddings; rotary positions turn each pair of a query's or key's
coordinates by it. The PyTorch model, the numpy runtime and the lesson all read them from here.
"""

from __future__ import annotations

import numpy as np


def position_angles(positions: int, dim: int) -> np.ndarray:
    """pos / 10000^(2i/dim) for every position and every i < dim / 2: (positions, ceil(dim / 2)), float64."""
    pos = np.arange(positions, dtype=np.float64)[:, None]
    return pos / np.power(10000.0, np.arange(0, dim, 2, dtype=np.float64) / dim)


def sinusoidal_table(positions: int, dim: int) -> np.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)); (positions, dim)."""
    angle = position_angles(positions, dim)
    table = np.zeros((positions, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : dim // 2])
    return table.astype(np.float32)


def rotary_tables(positions: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, each (positions, head_dim / 2), of the sinusoidal table's angles, used to turn
    each pair (x_i, x_{i + D/2}) of a query or key."""
    angle = position_angles(positions, head_dim)
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
