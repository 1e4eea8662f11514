"""Dense reference losses: the papers' equations over the full ``[B, B]`` matrix.

For tests and small batches only. Same names and signatures as `contrastive.losses` without
``axis_name``; ``block_size`` is accepted and ignored. Three modules: `clip` (softmax and sigmoid),
`pairs` (the pairwise zoo: DCL, SupCon, soft targets, focal, ...) and `multimodal` (the n-modal
losses and MoCo's queue).
"""

from contrastive.losses.reference.amcl import amcl_loss
from contrastive.losses.reference.clip import sigmoid_loss
from contrastive.losses.reference.clip import softmax_loss
from contrastive.losses.reference.geometry import cacr_loss
from contrastive.losses.reference.geometry import decoupled_uniformity_loss
from contrastive.losses.reference.geometry import kernel_decoupled_uniformity_loss
from contrastive.losses.reference.geometry import medclip_targets
from contrastive.losses.reference.geometry import poly_view_loss
from contrastive.losses.reference.gram_itm import gram_itm_loss
from contrastive.losses.reference.isogclr import isogclr_estimates
from contrastive.losses.reference.isogclr import isogclr_loss
from contrastive.losses.reference.isogclr import isogclr_weighted_z
from contrastive.losses.reference.mcl import mcl_loss
from contrastive.losses.reference.mochi import mochi_loss
from contrastive.losses.reference.multimodal import cmc_loss
from contrastive.losses.reference.multimodal import gram_loss
from contrastive.losses.reference.multimodal import moco_loss
from contrastive.losses.reference.multimodal import mv_dhel_loss
from contrastive.losses.reference.multimodal import mv_infonce_loss
from contrastive.losses.reference.multimodal import symile_loss
from contrastive.losses.reference.pairs import align_uniform_loss
from contrastive.losses.reference.pairs import auc_mw_loss
from contrastive.losses.reference.pairs import contrastive_gap_loss
from contrastive.losses.reference.pairs import cwcl_targets
from contrastive.losses.reference.pairs import dcl_loss
from contrastive.losses.reference.pairs import dclw_loss
from contrastive.losses.reference.pairs import hard_negative_loss
from contrastive.losses.reference.pairs import kernel_infonce_loss
from contrastive.losses.reference.pairs import macl_loss
from contrastive.losses.reference.pairs import mixup_targets
from contrastive.losses.reference.pairs import multi_positive_loss
from contrastive.losses.reference.pairs import sigmoid_focal_loss
from contrastive.losses.reference.pairs import soft_target_loss
from contrastive.losses.reference.pairs import softmax_focal_loss
from contrastive.losses.reference.pairs import supcon_loss
from contrastive.losses.reference.pairs import teacher_logits

__all__ = [
  "align_uniform_loss",
  "amcl_loss",
  "auc_mw_loss",
  "cacr_loss",
  "cmc_loss",
  "contrastive_gap_loss",
  "cwcl_targets",
  "dcl_loss",
  "decoupled_uniformity_loss",
  "dclw_loss",
  "gram_itm_loss",
  "gram_loss",
  "hard_negative_loss",
  "isogclr_estimates",
  "isogclr_loss",
  "isogclr_weighted_z",
  "kernel_decoupled_uniformity_loss",
  "kernel_infonce_loss",
  "macl_loss",
  "mcl_loss",
  "medclip_targets",
  "mixup_targets",
  "mochi_loss",
  "moco_loss",
  "multi_positive_loss",
  "mv_dhel_loss",
  "mv_infonce_loss",
  "poly_view_loss",
  "sigmoid_focal_loss",
  "sigmoid_loss",
  "soft_target_loss",
  "softmax_focal_loss",
  "softmax_loss",
  "supcon_loss",
  "symile_loss",
  "teacher_logits",
]
