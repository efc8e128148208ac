"""The flat parameter buffer: one contiguous array holding U, W, b, V, c in that order.

Both backends, the optimizers and clipping work on this one buffer; the model hands out views
(or copies) of its pieces by name. The order is also the order of initialization (DESIGN.md §1).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

__all__ = ["param_layout", "param_count", "param_views"]


def param_layout(input_size: int, hidden_size: int, output_size: int,
                 bias: bool) -> List[Tuple[str, int, Tuple[int, ...]]]:
    """Return ``[(name, offset, shape), ...]`` for U (H, I), W (H, H), [b (H,)], V (O, H), [c (O,)]."""
    I, H, O = input_size, hidden_size, output_size
    shapes: List[Tuple[str, Tuple[int, ...]]] = [("U", (H, I)), ("W", (H, H))]
    if bias:
        shapes.append(("b", (H,)))
    shapes.append(("V", (O, H)))
    if bias:
        shapes.append(("c", (O,)))
    layout = []
    offset = 0
    for name, shape in shapes:
        layout.append((name, offset, shape))
        offset += int(np.prod(shape))
    return layout


def param_count(input_size: int, hidden_size: int, output_size: int, bias: bool) -> int:
    """Number of scalars in the flat buffer: H*I + H*H + O*H (+ H + O with biases)."""
    I, H, O = input_size, hidden_size, output_size
    return H * I + H * H + O * H + ((H + O) if bias else 0)


def param_views(flat: np.ndarray, input_size: int, hidden_size: int, output_size: int,
                bias: bool) -> Dict[str, np.ndarray]:
    """Views (not copies) of each parameter inside ``flat``, keyed "U", "W", ["b",] "V", ["c"]."""
    return {name: flat[offset:offset + int(np.prod(shape))].reshape(shape)
            for name, offset, shape in param_layout(input_size, hidden_size, output_size, bias)}
