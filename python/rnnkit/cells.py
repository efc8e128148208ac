"""The cell registry: what each recurrent cell is, for every part of rnnkit that must know.

A cell (docs/architecture.md §1-2) is the part of a recurrent layer that differs between RNN,
GRU and LSTM. Its entry here gives its sizes; its readable forward/backward step lives in
:mod:`rnnkit.reference` (``reference.CELL_STEPS``) and its compiled one in
``csrc/cell_<name>.h``. Nothing else (layout, epoch loop, optimizers, save/load) depends on
which cell a model uses.
"""

from __future__ import annotations

from typing import Dict, NamedTuple

__all__ = ["ACTIVATIONS", "CellSpec", "CELLS", "cell_spec"]

# the activations of the candidate state (h = f(a) for the Elman cell), every backend's
ACTIVATIONS = ("tanh", "sigmoid", "relu")


class CellSpec(NamedTuple):
    """Sizes of a cell, in multiples of the hidden size H.

    gates: the layer's projections have ``gates * H`` rows, in PyTorch's gate order.
    state: the state carried from step to step, ``state * H`` scalars (h, then LSTM's c).
    cache: what one step keeps for the backward pass, ``cache * H`` scalars, its state first.
    two_biases: ``b_ih`` and ``b_hh`` (as PyTorch) rather than one ``b``.
    """

    name: str
    gates: int
    state: int
    cache: int
    two_biases: bool


CELLS: Dict[str, CellSpec] = {
    "rnn": CellSpec("rnn", gates=1, state=1, cache=1, two_biases=False),     # [h]
    "gru": CellSpec("gru", gates=3, state=1, cache=5, two_biases=True),      # [h, r, z, n, hn]
    "lstm": CellSpec("lstm", gates=4, state=2, cache=7, two_biases=True),    # [h, c, i, f, g, o, f(c)]
}


def cell_spec(cell: str) -> CellSpec:
    """The registry entry of ``cell``; ValueError naming the choices for an unknown name."""
    try:
        return CELLS[cell]
    except (KeyError, TypeError):
        raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}") from None
