"""Contrastive losses: pure functions of embeddings, exact over a device mesh.

Each loss takes local embeddings and, with ``axis_name``, reaches the negatives on every other
device through a ring of ``ppermute`` (`contrastive.losses.ring`); dense equivalents for tests
live in `contrastive.losses.reference`.
"""

from contrastive.losses import reference
from contrastive.losses.registry import LOSSES, Objective, get, register
from contrastive.losses.ring import Home, Tile, TileLoss, ring_loss
from contrastive.losses.sigmoid import sigmoid_loss
from contrastive.losses.softmax import softmax_loss

__all__ = [
    "LOSSES", "Home", "Objective", "Tile", "TileLoss", "get", "reference", "register", "ring_loss",
    "sigmoid_loss", "softmax_loss",
]
