"""The flat parameter buffer: one contiguous array holding every layer's weights, then V, c.

Both backends, the optimizers and clipping work on this one buffer; the model hands out views
(or copies) of its pieces by name. The order is also the order of initialization (DESIGN.md §1,
docs/architecture.md §3):

    for each layer l:  U (G·H, I_l)  W (G·H, H)  [b (H,)  |  b_ih (G·H,)  b_hh (G·H,)]
    V (O, H)  [c (O,)]

G is the cell's number of gates (RNN 1, GRU 3, LSTM 4); I_0 is the input size, I_l = H above.
Layer 0's names are U, W, b / b_ih, b_hh; layer l >= 1 adds the suffix ``_l{l}``.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from ._checks import check_bool, check_int
from .cells import cell_spec

__all__ = ["param_layout", "param_count", "param_views", "layer_suffix"]


def layer_suffix(layer: int) -> str:
    """"" for layer 0, "_l1", "_l2", ... above (PyTorch's suffixes, minus layer 0's)."""
    return f"_l{layer}" if layer else ""


def _checked_sizes(input_size: int, hidden_size: int, output_size: int, bias: bool,
                   num_layers: int) -> Tuple[int, int, int, int]:
    """The sizes as ints, each at least 1, and bias a bool, else the error naming the argument
    (as the model classes check them)."""
    check_bool(bias, "bias")
    return (check_int(input_size, "input_size", 1), check_int(hidden_size, "hidden_size", 1),
            check_int(output_size, "output_size", 1), check_int(num_layers, "num_layers", 1))


def param_layout(input_size: int, hidden_size: int, output_size: int, bias: bool,
                 cell: str = "rnn", num_layers: int = 1
                 ) -> List[Tuple[str, int, Tuple[int, ...]]]:
    """Return ``[(name, offset, shape), ...]`` in buffer order (see the module docstring)."""
    spec = cell_spec(cell)
    input_size, H, O, num_layers = _checked_sizes(input_size, hidden_size, output_size, bias,
                                                  num_layers)
    GH = spec.gates * H
    shapes: List[Tuple[str, Tuple[int, ...]]] = []
    for layer in range(num_layers):
        s = layer_suffix(layer)
        shapes += [("U" + s, (GH, input_size if layer == 0 else H)), ("W" + s, (GH, H))]
        if bias:
            shapes += ([("b_ih" + s, (GH,)), ("b_hh" + s, (GH,))] if spec.two_biases
                       else [("b" + s, (H,))])
    shapes.append(("V", (O, H)))
    if bias:
        shapes.append(("c", (O,)))
    layout = []
    offset = 0
    for name, shape in shapes:
        layout.append((name, offset, shape))
        offset += int(np.prod(shape))
    return layout


def param_count(input_size: int, hidden_size: int, output_size: int, bias: bool,
                cell: str = "rnn", num_layers: int = 1) -> int:
    """Number of scalars in the flat buffer (for one Elman layer: H*I + H*H + O*H (+ H + O))."""
    spec = cell_spec(cell)
    I, H, O, num_layers = _checked_sizes(input_size, hidden_size, output_size, bias, num_layers)
    GH = spec.gates * H
    per_bias = (2 * GH if spec.two_biases else H) if bias else 0
    layers = GH * I + GH * H + per_bias + (num_layers - 1) * (GH * H + GH * H + per_bias)
    return layers + O * H + (O if bias else 0)


def param_views(flat: np.ndarray, input_size: int, hidden_size: int, output_size: int,
                bias: bool, cell: str = "rnn", num_layers: int = 1) -> Dict[str, np.ndarray]:
    """Views (not copies) of each parameter inside ``flat``, keyed by the names of
    :func:`param_layout`; ``flat`` must be the whole buffer, of shape (param_count(...),)."""
    layout = param_layout(input_size, hidden_size, output_size, bias, cell, num_layers)
    _, last_offset, last_shape = layout[-1]
    size = last_offset + int(np.prod(last_shape))
    if not isinstance(flat, np.ndarray) or flat.shape != (size,):
        raise ValueError(f"flat must be a 1-D array of the {size} parameters of this layout, "
                         f"got {type(flat).__name__} of shape {np.shape(flat)}")
    return {name: flat[offset:offset + int(np.prod(shape))].reshape(shape)
            for name, offset, shape in layout}
