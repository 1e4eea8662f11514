"""Losses by name, for configs: one table, one calling convention.

The trainer calls every objective the same way::

    objective = losses.get(config.loss.name)
    loss = objective(embeddings, scale, bias, side, axis_name=..., block_size=..., **options)

``embeddings`` is the sequence of ``[batch, dim]`` arrays of the modalities in the order the model
config lists them (two for a pair loss, ``k`` for an n-modal one), ``side`` the batch's other
arrays (labels, hard negatives, ...), of which the objective reads the keys it names in
``side_keys``. ``options`` are the loss function's own keywords: every key of ``config.loss``
but the trainer's own (``name``, ``block_size``, ``side_inputs``, ``queue_size``, ``momentum``).

:data:`LOSSES` is the whole table: each entry pairs a loss of this package with an adapter from
the convention above to the loss's own signature, and with its dense reference
(`contrastive.losses.reference`) behind the same adapter. The loss modules know nothing of it;
:func:`register` adds a loss of one's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Literal

import jax

from contrastive.losses import reference
from contrastive.losses.align_uniform import align_uniform_loss
from contrastive.losses.align_uniform import contrastive_gap_loss
from contrastive.losses.amcl import amcl_loss
from contrastive.losses.amcl import registry_adapter as amcl_adapter
from contrastive.losses.auc import auc_mw_loss
from contrastive.losses.cacr import cacr_loss
from contrastive.losses.cmc import cmc_loss
from contrastive.losses.dcl import dcl_loss
from contrastive.losses.dcl import dclw_loss
from contrastive.losses.decoupled_uniformity import decoupled_uniformity_loss
from contrastive.losses.focal import sigmoid_focal_loss
from contrastive.losses.focal import softmax_focal_loss
from contrastive.losses.gram import gram_loss
from contrastive.losses.gram_itm import gram_itm_loss
from contrastive.losses.gram_itm import registry_adapter as gram_itm_adapter
from contrastive.losses.hard_negative import hard_negative_loss
from contrastive.losses.isogclr import ISOGCLR_STATE_KEYS
from contrastive.losses.isogclr import IsogclrOptions
from contrastive.losses.isogclr import isogclr_loss
from contrastive.losses.kernel import kernel_infonce_loss
from contrastive.losses.macl import macl_loss
from contrastive.losses.mcl import mcl_loss
from contrastive.losses.mochi import mochi_loss
from contrastive.losses.moco import moco_loss
from contrastive.losses.multiview import mv_dhel_loss
from contrastive.losses.multiview import mv_infonce_loss
from contrastive.losses.poly_view import poly_view_loss
from contrastive.losses.sigmoid import sigmoid_loss
from contrastive.losses.soft_target import cwcl_targets
from contrastive.losses.soft_target import medclip_targets
from contrastive.losses.soft_target import mixup_targets
from contrastive.losses.soft_target import soft_target_loss
from contrastive.losses.soft_target import teacher_logits
from contrastive.losses.softmax import softmax_loss
from contrastive.losses.supcon import multi_positive_loss
from contrastive.losses.supcon import supcon_loss
from contrastive.losses.symile import symile_loss


@dataclasses.dataclass(frozen=True)
class Objective:
  """A loss as the trainer sees it."""

  name: str
  # (embeddings, scale, bias, side, *, axis_name, block_size, **options) -> float32 scalar
  fn: Callable[..., jax.Array]
  modalities: int | None = 2  # the number of embeddings it takes; None: any k >= 2
  uses_bias: bool = False  # whether the model must learn a logit bias
  init: Literal["clip", "siglip"] = "clip"  # the scale/bias initialization convention
  side_keys: tuple[str, ...] = ()  # batch keys it reads from `side`
  # Keys from a momentum encoder and a queue of past keys, both state the trainer carries
  # (`contrastive.train.momentum`): `embeddings = (queries, keys)`, the queue in `side["queue"]`.
  momentum_queue: bool = False
  # A per-example state the trainer carries, indexed by the batch's example ids (`index`), whose
  # rows reach the loss as side data (`contrastive.train.example_state`): iSogCLR.
  example_state: bool = False
  paper: str = ""
  # The dense equivalent with the same calling convention (no axis_name): for tests, benchmarks.
  reference: Callable[..., jax.Array] | None = None

  def __call__(
    self,
    embeddings: Sequence[jax.Array],
    scale,
    bias=None,
    side: Mapping[str, jax.Array] | None = None,
    *,
    axis_name=None,
    block_size=None,
    **options,
  ) -> jax.Array:
    side = self._check(embeddings, side)
    return self.fn(
      embeddings, scale, bias, side, axis_name=axis_name, block_size=block_size, **options
    )

  def dense(
    self,
    embeddings: Sequence[jax.Array],
    scale,
    bias=None,
    side: Mapping[str, jax.Array] | None = None,
    **options,
  ) -> jax.Array:
    """The dense reference, called like the objective (whole batch, one device)."""
    if self.reference is None:
      raise NotImplementedError(f"Loss {self.name!r} has no dense reference registered.")
    return self.reference(embeddings, scale, bias, self._check(embeddings, side), **options)

  def _check(self, embeddings, side) -> dict[str, jax.Array]:
    if self.modalities is not None and len(embeddings) != self.modalities:
      raise ValueError(
        f"Loss {self.name!r} takes {self.modalities} modalities, got {len(embeddings)}."
      )
    side = dict(side or {})
    missing = [k for k in self.side_keys if k not in side]
    if missing:
      raise KeyError(
        f"Loss {self.name!r} needs batch keys {missing}; the batch has {sorted(side)}."
      )
    return side


# ----------------------------------------------------------------------------------------------
# Adapters: from (embeddings, scale, bias, side, **kw) to each family's own signature.


def pair_adapter(
  fn: Callable[..., jax.Array],
  *,
  uses_bias: bool = False,
  uses_scale: bool = True,
  side_args: Sequence[str] = (),
):
  """Adapts ``fn(x, y[, scale][, bias], *side_args, **kw)`` to the registry's calling convention.

  ``side_args`` names the batch keys passed positionally after the scalars; an absent key passes
  None (an optional argument, such as ``hard_negative_loss``'s ``neg_x``).
  """

  def adapted(embeddings, scale, bias, side, **kw):
    x, y = embeddings
    scalars = (scale,) * uses_scale + (bias,) * uses_bias
    return fn(x, y, *scalars, *(side.get(k) for k in side_args), **kw)

  return adapted


def modalities_adapter(fn: Callable[..., jax.Array]):
  """Adapts ``fn(embeddings, scale, **kw)`` (the n-modal losses) to the registry's convention."""

  def adapted(embeddings, scale, bias, side, **kw):
    del bias, side
    return fn(embeddings, scale, **kw)

  return adapted


def unscaled_modalities_adapter(fn: Callable[..., jax.Array]):
  """Adapts ``fn(embeddings, **kw)`` (an n-modal loss without a logit scale) to the registry."""

  def adapted(embeddings, scale, bias, side, **kw):
    del scale, bias, side
    return fn(embeddings, **kw)

  return adapted


def queue_adapter(fn: Callable[..., jax.Array]):
  """Adapts ``fn(q, k, queue, scale, **kw)`` (MoCo) to the registry: ``embeddings = (q, k)``, the
  queue in ``side["queue"]``."""

  def adapted(embeddings, scale, bias, side, **kw):
    del bias
    q, k = embeddings
    return fn(q, k, side["queue"], scale, **kw)

  return adapted


def random_queue_adapter(fn: Callable[..., jax.Array]):
  """Adapts ``fn(q, k, queue, scale, rng, **kw)`` (MoCHi): as `queue_adapter`, and a PRNG key in
  ``side["rng"]``, which the trainer's momentum step gives every momentum-queue loss."""

  def adapted(embeddings, scale, bias, side, **kw):
    del bias
    q, k = embeddings
    return fn(q, k, side["queue"], scale, side["rng"], **kw)

  return adapted


def example_state_adapter(fn: Callable[..., jax.Array]):
  """Adapts ``fn(x, y, tau_x, tau_y, log_u_x, log_u_y, **kw)`` (iSogCLR): the state's rows in
  ``side``; the state update's options (`IsogclrOptions`) are checked here, not passed on."""

  def adapted(embeddings, scale, bias, side, **kw):
    del scale, bias
    x, y = embeddings
    IsogclrOptions(**{k: kw.pop(k) for k in list(kw) if k in IsogclrOptions.__dataclass_fields__})
    return fn(x, y, *(side[k] for k in ISOGCLR_STATE_KEYS), **kw)

  return adapted


def soft_target_adapter(
  fn: Callable[..., jax.Array],
  targets: Callable[..., Callable],
  keys: Sequence[str],
  *,
  target_options: Sequence[str] = (),
  **fixed,
):
  """Adapts ``fn(x, y, scale, side, *, targets, **kw)`` (`soft_target_loss` or its reference).

  The loss's side data is ``side``'s ``keys``; its target function ``targets(*values)``, the
  values of the objective's options named in ``target_options`` (None when not given); ``fixed``
  are further keywords of ``fn`` (``space``, ``normalize``).
  """

  def adapted(embeddings, scale, bias, side, **kw):
    del bias
    x, y = embeddings
    made = targets(*(kw.pop(k, None) for k in target_options))
    return fn(x, y, scale, {k: side[k] for k in keys}, targets=made, **fixed, **kw)

  return adapted


# The soft-target objectives' side data, and the distillation's option of its target function.
_TEACHER = ("teacher_x", "teacher_y")
_MIX = ("mix_lambda", "mix_partner")
_DISTILL = {"target_options": ("teacher_scale",), "space": "logits"}
# MedCLIP's multi-hot labels, and the option of its target function (tau').
_MEDCLIP = {"target_options": ("label_temperature",), "space": "logits"}


# ----------------------------------------------------------------------------------------------
# The table.

LOSSES: dict[str, Objective] = {
  "softmax": Objective(
    "softmax",
    pair_adapter(softmax_loss),
    paper="CLIP (Radford et al., 2021)",
    reference=pair_adapter(reference.softmax_loss),
  ),
  "sigmoid": Objective(
    "sigmoid",
    pair_adapter(sigmoid_loss, uses_bias=True),
    uses_bias=True,
    init="siglip",
    paper="SigLIP (Zhai et al., 2023)",
    reference=pair_adapter(reference.sigmoid_loss, uses_bias=True),
  ),
  "align_uniform": Objective(
    "align_uniform",
    pair_adapter(align_uniform_loss, uses_scale=False),
    paper="Alignment and uniformity (Wang & Isola, ICML 2020)",
    reference=pair_adapter(reference.align_uniform_loss, uses_scale=False),
  ),
  "contrastive_gap": Objective(
    "contrastive_gap",
    pair_adapter(contrastive_gap_loss),
    paper="CUA/CUAXU, the contrastive gap (Fahim et al., 2024)",
    reference=pair_adapter(reference.contrastive_gap_loss),
  ),
  "auc_mw": Objective(
    "auc_mw",
    pair_adapter(auc_mw_loss),
    paper="MW / AUC-driven retrieval loss (2025)",
    reference=pair_adapter(reference.auc_mw_loss),
  ),
  "cmc": Objective(
    "cmc",
    modalities_adapter(cmc_loss),
    modalities=None,
    paper="CMC (Tian et al., ECCV 2020)",
    reference=modalities_adapter(reference.cmc_loss),
  ),
  "dcl": Objective(
    "dcl",
    pair_adapter(dcl_loss),
    paper="DCL (Yeh et al., ECCV 2022)",
    reference=pair_adapter(reference.dcl_loss),
  ),
  "dclw": Objective(
    "dclw",
    pair_adapter(dclw_loss),
    paper="DCLW (Yeh et al., ECCV 2022)",
    reference=pair_adapter(reference.dclw_loss),
  ),
  "sigmoid_focal": Objective(
    "sigmoid_focal",
    pair_adapter(sigmoid_focal_loss, uses_bias=True),
    uses_bias=True,
    init="siglip",
    paper="RO-ViT focal contrastive loss (Kim et al., CVPR 2023)",
    reference=pair_adapter(reference.sigmoid_focal_loss, uses_bias=True),
  ),
  "softmax_focal": Objective(
    "softmax_focal",
    pair_adapter(softmax_focal_loss),
    paper="Focal ITC (Park & Han, CVPR 2023)",
    reference=pair_adapter(reference.softmax_focal_loss),
  ),
  "gram": Objective(
    "gram",
    modalities_adapter(gram_loss),
    modalities=None,
    paper="GRAM (Cicchetti et al., ICLR 2025)",
    reference=modalities_adapter(reference.gram_loss),
  ),
  "gram_itm": Objective(
    "gram_itm",
    gram_itm_adapter(gram_itm_loss),
    modalities=None,
    uses_bias=True,
    side_keys=("index",),
    paper="GRAM's data-anchor matching (Cicchetti et al., ICLR 2025)",
    reference=gram_itm_adapter(reference.gram_itm_loss),
  ),
  "hard_negative": Objective(
    "hard_negative",
    pair_adapter(hard_negative_loss, side_args=("neg_y", "neg_x")),
    side_keys=("neg_y",),
    paper="Hard-negative InfoNCE (NegCLIP, Yuksekgonul et al., ICLR 2023)",
    reference=pair_adapter(reference.hard_negative_loss, side_args=("neg_y", "neg_x")),
  ),
  "kernel_infonce": Objective(
    "kernel_infonce",
    pair_adapter(kernel_infonce_loss),
    paper="Kernel-InfoNCE (Tan et al., ICLR 2024)",
    reference=pair_adapter(reference.kernel_infonce_loss),
  ),
  "macl": Objective(
    "macl",
    pair_adapter(macl_loss),
    paper="MACL (Huang et al., ICML 2023)",
    reference=pair_adapter(reference.macl_loss),
  ),
  "mochi": Objective(
    "mochi",
    random_queue_adapter(mochi_loss),
    side_keys=("queue", "rng"),
    momentum_queue=True,
    paper="MoCHi (Kalantidis et al., NeurIPS 2020)",
    reference=random_queue_adapter(reference.mochi_loss),
  ),
  "moco": Objective(
    "moco",
    queue_adapter(moco_loss),
    side_keys=("queue",),
    momentum_queue=True,
    paper="MoCo (He et al., CVPR 2020)",
    reference=queue_adapter(reference.moco_loss),
  ),
  "isogclr": Objective(
    "isogclr",
    example_state_adapter(isogclr_loss),
    side_keys=("index", *ISOGCLR_STATE_KEYS),
    example_state=True,
    paper="iSogCLR (Qiu et al., ICML 2023)",
    reference=example_state_adapter(reference.isogclr_loss),
  ),
  "mv_infonce": Objective(
    "mv_infonce",
    modalities_adapter(mv_infonce_loss),
    modalities=None,
    paper="MV-InfoNCE (Koromilas et al., 2025)",
    reference=modalities_adapter(reference.mv_infonce_loss),
  ),
  "mv_dhel": Objective(
    "mv_dhel",
    modalities_adapter(mv_dhel_loss),
    modalities=None,
    paper="MV-DHEL (Koromilas et al., 2025)",
    reference=modalities_adapter(reference.mv_dhel_loss),
  ),
  "cwcl": Objective(
    "cwcl",
    soft_target_adapter(soft_target_loss, cwcl_targets, ("frozen",)),
    side_keys=("frozen",),
    paper="CWCL (Srinivasa et al., NeurIPS 2023)",
    reference=soft_target_adapter(reference.soft_target_loss, reference.cwcl_targets, ("frozen",)),
  ),
  "distill": Objective(
    "distill",
    soft_target_adapter(soft_target_loss, teacher_logits, _TEACHER, **_DISTILL),
    side_keys=_TEACHER,
    paper="Soft-target distillation (ALBEF momentum distillation, Li et al., NeurIPS 2021)",
    reference=soft_target_adapter(
      reference.soft_target_loss, reference.teacher_logits, _TEACHER, **_DISTILL
    ),
  ),
  "m3col": Objective(
    "m3col",
    soft_target_adapter(soft_target_loss, mixup_targets, _MIX, normalize=False),
    side_keys=_MIX,
    paper="M3CoL mixup contrastive (Kumar et al., 2024)",
    reference=soft_target_adapter(
      reference.soft_target_loss, reference.mixup_targets, _MIX, normalize=False
    ),
  ),
  "cacr": Objective(
    "cacr",
    pair_adapter(cacr_loss, uses_scale=False),
    paper="CACR (Zheng et al., TMLR 2023)",
    reference=pair_adapter(reference.cacr_loss, uses_scale=False),
  ),
  "decoupled_uniformity": Objective(
    "decoupled_uniformity",
    unscaled_modalities_adapter(decoupled_uniformity_loss),
    modalities=None,
    paper="Decoupled uniformity (Dufumier et al., ICML 2023)",
    reference=unscaled_modalities_adapter(reference.decoupled_uniformity_loss),
  ),
  "poly_view": Objective(
    "poly_view",
    modalities_adapter(poly_view_loss),
    modalities=None,
    paper="Poly-View contrastive (Shidani et al., ICLR 2024)",
    reference=modalities_adapter(reference.poly_view_loss),
  ),
  "medclip": Objective(
    "medclip",
    soft_target_adapter(soft_target_loss, medclip_targets, ("findings",), **_MEDCLIP),
    side_keys=("findings",),
    paper="MedCLIP semantic matching (Wang et al., EMNLP 2022)",
    reference=soft_target_adapter(
      reference.soft_target_loss, reference.medclip_targets, ("findings",), **_MEDCLIP
    ),
  ),
  "supcon": Objective(
    "supcon",
    pair_adapter(supcon_loss, side_args=("labels",)),
    side_keys=("labels",),
    paper="SupCon (Khosla et al., NeurIPS 2020)",
    reference=pair_adapter(reference.supcon_loss, side_args=("labels",)),
  ),
  "multi_positive": Objective(
    "multi_positive",
    pair_adapter(multi_positive_loss, side_args=("labels",)),
    side_keys=("labels",),
    paper="Multi-positive InfoNCE / MIL-NCE (Miech et al., CVPR 2020)",
    reference=pair_adapter(reference.multi_positive_loss, side_args=("labels",)),
  ),
  # Multistage contrastive learning; "labels" are the pairs' cluster ids of the previous stage.
  "mcl": Objective(
    "mcl",
    pair_adapter(mcl_loss, side_args=("labels",)),
    side_keys=("labels",),
    paper="MCL, Learning the Unlearned (Zhang et al., ECCV 2024)",
    reference=pair_adapter(reference.mcl_loss, side_args=("labels",)),
  ),
  "amcl": Objective(
    "amcl",
    amcl_adapter(amcl_loss),
    paper="AMCL, Adaptive Multi-head Contrastive Learning (Wang et al., ECCV 2024)",
    reference=amcl_adapter(reference.amcl_loss),
  ),
  "symile": Objective(
    "symile",
    modalities_adapter(symile_loss),
    modalities=None,
    paper="Symile (Saporta et al., NeurIPS 2024)",
    reference=modalities_adapter(reference.symile_loss),
  ),
}


def register(objective: Objective) -> Objective:
  """Adds an objective to the table; its name must be new."""
  if objective.name in LOSSES:
    raise ValueError(f"Loss {objective.name!r} is already registered.")
  LOSSES[objective.name] = objective
  return objective


def get(name: str) -> Objective:
  """The registered objective called `name`; an unknown name lists the known ones."""
  try:
    return LOSSES[name]
  except KeyError:
    raise ValueError(f"Unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}.") from None
