"""Contrastive losses: pure functions of embeddings, exact over a device mesh.

Each loss takes local embeddings and, with ``axis_name``, reaches the negatives on every other
device through a ring of ``ppermute`` (`contrastive.losses.ring`); dense equivalents for tests
live in `contrastive.losses.reference`.
"""

from contrastive.losses import reference
from contrastive.losses.cmc import cmc_loss
from contrastive.losses.gram import gram_loss
from contrastive.losses.moco import ema_update, init_queue, moco_loss, update_queue
from contrastive.losses.multiview import mv_dhel_loss, mv_infonce_loss
from contrastive.losses.registry import LOSSES, Objective, get, register
from contrastive.losses.ring import Home, Tile, TileLoss, ring_loss
from contrastive.losses.sigmoid import sigmoid_loss
from contrastive.losses.softmax import softmax_loss
from contrastive.losses.symile import symile_loss

__all__ = [
    "LOSSES", "Home", "Objective", "Tile", "TileLoss", "get", "reference", "register", "ring_loss",
    "sigmoid_loss", "softmax_loss",
    "cmc_loss", "ema_update", "gram_loss", "init_queue", "moco_loss", "mv_dhel_loss",
    "mv_infonce_loss", "symile_loss", "update_queue",
]
