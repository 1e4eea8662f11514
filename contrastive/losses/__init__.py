"""Contrastive losses: pure functions of embeddings, exact over a device mesh.

Each loss takes local embeddings and, with ``axis_name``, reaches the negatives on every other
device through a ring of ``ppermute`` (`contrastive.losses.ring`); dense equivalents for tests
live in `contrastive.losses.reference`.
"""

from contrastive.losses import reference
from contrastive.losses.align_uniform import align_uniform_loss
from contrastive.losses.align_uniform import contrastive_gap_loss
from contrastive.losses.amcl import amcl_loss
from contrastive.losses.auc import auc_mw_loss
from contrastive.losses.cacr import cacr_loss
from contrastive.losses.caption import caption_loss
from contrastive.losses.caption import caption_sums
from contrastive.losses.cmc import cmc_loss
from contrastive.losses.dcl import dcl_loss
from contrastive.losses.dcl import dclw_loss
from contrastive.losses.decoupled_uniformity import decoupled_uniformity_loss
from contrastive.losses.decoupled_uniformity import kernel_decoupled_uniformity_loss
from contrastive.losses.focal import sigmoid_focal_loss
from contrastive.losses.focal import softmax_focal_loss
from contrastive.losses.gram import gram_loss
from contrastive.losses.gram_itm import gram_itm_loss
from contrastive.losses.hard_negative import hard_negative_loss
from contrastive.losses.isogclr import IsogclrOptions
from contrastive.losses.isogclr import isogclr_estimates
from contrastive.losses.isogclr import isogclr_loss
from contrastive.losses.isogclr import isogclr_moving_average
from contrastive.losses.isogclr import isogclr_tau_step
from contrastive.losses.isogclr import isogclr_weighted_z
from contrastive.losses.kernel import kernel_infonce_loss
from contrastive.losses.macl import macl_loss
from contrastive.losses.mcl import assign_clusters
from contrastive.losses.mcl import kmeans_clusters
from contrastive.losses.mcl import mcl_loss
from contrastive.losses.mochi import mochi_loss
from contrastive.losses.moco import ema_update
from contrastive.losses.moco import init_queue
from contrastive.losses.moco import moco_loss
from contrastive.losses.moco import update_queue
from contrastive.losses.multiview import mv_dhel_loss
from contrastive.losses.multiview import mv_infonce_loss
from contrastive.losses.poly_view import poly_view_loss
from contrastive.losses.registry import LOSSES
from contrastive.losses.registry import Objective
from contrastive.losses.registry import get
from contrastive.losses.registry import register
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss
from contrastive.losses.ring import ring_stats
from contrastive.losses.sigmoid import sigmoid_loss
from contrastive.losses.soft_target import TargetTile
from contrastive.losses.soft_target import cwcl_targets
from contrastive.losses.soft_target import label_smoothing_targets
from contrastive.losses.soft_target import medclip_targets
from contrastive.losses.soft_target import mixup_targets
from contrastive.losses.soft_target import one_hot_targets
from contrastive.losses.soft_target import soft_target_loss
from contrastive.losses.soft_target import teacher_logits
from contrastive.losses.softmax import softmax_loss
from contrastive.losses.supcon import multi_positive_loss
from contrastive.losses.supcon import supcon_loss
from contrastive.losses.symile import symile_loss

__all__ = [
  "IsogclrOptions",
  "LOSSES",
  "Objective",
  "ReducedBlock",
  "TargetTile",
  "Tile",
  "TileLoss",
  "align_uniform_loss",
  "amcl_loss",
  "assign_clusters",
  "auc_mw_loss",
  "cacr_loss",
  "caption_loss",
  "caption_sums",
  "cmc_loss",
  "contrastive_gap_loss",
  "cwcl_targets",
  "dcl_loss",
  "dclw_loss",
  "decoupled_uniformity_loss",
  "ema_update",
  "get",
  "gram_itm_loss",
  "gram_loss",
  "hard_negative_loss",
  "init_queue",
  "isogclr_estimates",
  "isogclr_loss",
  "isogclr_moving_average",
  "isogclr_tau_step",
  "isogclr_weighted_z",
  "kernel_decoupled_uniformity_loss",
  "kernel_infonce_loss",
  "kmeans_clusters",
  "label_smoothing_targets",
  "macl_loss",
  "mcl_loss",
  "medclip_targets",
  "mixup_targets",
  "mochi_loss",
  "moco_loss",
  "multi_positive_loss",
  "mv_dhel_loss",
  "mv_infonce_loss",
  "one_hot_targets",
  "poly_view_loss",
  "reference",
  "register",
  "ring_loss",
  "ring_stats",
  "sigmoid_focal_loss",
  "sigmoid_loss",
  "soft_target_loss",
  "softmax_focal_loss",
  "softmax_loss",
  "supcon_loss",
  "symile_loss",
  "teacher_logits",
  "update_queue",
]
