"""The n-tower model: per-modality encoders, projections to one space, and the logit scale.

A `TowerModel` maps each modality name (`image`, `text`, `audio`, ...) to an encoder; each
encoder's pooled output is projected by a linear `head` to `embed_dim` and L2-normalized. The
model also owns the learnable logit `scale` (and optional `bias`) that the losses take, stored in
log space (the scale) and initialized by convention:

| convention | scale init           | bias init | max scale |
| ---------- | -------------------- | --------- | --------- |
| `clip`     | `1/0.07` (log 2.659) | none      | 100       |
| `siglip`   | `10` (log 2.303)     | `-10`     | none      |

SigLIP's `-10` is the log-odds prior of a positive pair in a batch of about 22,000 (`prior_bias`):
at a small batch it leaves the negatives almost no gradient at the start, and a short run can
collapse. `prior_bias(batch_size)` is the bias to start from at another batch (docs/losses.md,
"SigLIP at a small batch").

Parameters: `params[modality]["encoder"]`, `params[modality]["head"]` (unless the tower has
`proj=False`: no head, the encoder's width is the embedding), `params["log_scale"]`
and, with a bias, `params["bias"]`.

References: Radford et al. 2021 (CLIP), https://arxiv.org/abs/2103.00020; Zhai et al. 2023
(SigLIP), https://arxiv.org/abs/2303.15343; Zhai et al. 2022 (LiT),
https://arxiv.org/abs/2111.07991.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from contrastive.models import layers

Convention = Literal["clip", "siglip"]

# name: (scale_init, bias_init, max_scale); `scale_init` is the scale itself, not its log.
CONVENTIONS: dict[str, dict[str, float | None]] = {
  "clip": dict(scale_init=1 / 0.07, bias_init=None, max_scale=100.0),
  "siglip": dict(scale_init=10.0, bias_init=-10.0, max_scale=None),
}
# The model's own scalar parameters, which `locked` may also name (a fixed temperature or bias).
SCALARS = ("log_scale", "bias")


def prior_bias(batch_size: int) -> float:
  r"""The sigmoid loss's bias at which a pair's initial probability is the prior of a positive.

  .. math::
    \sigma(b_0) = \frac{1}{B} \iff b_0 = -\log(B - 1)

  With `b_0` (and cosines near 0), the `B - 1` negatives of an example pull on the embeddings, at
  the start, as hard as its one positive does: `(B - 1) \sigma(b_0) = 1 - \sigma(b_0)`, so the
  bias's initial gradient is 0. SigLIP's `b = -10` is this prior for `B` of about 22,000 (its
  32k batch: `-10.4`); at `B = 128` the prior is `-4.84`, and starting at `-10` there leaves the
  negatives `127 e^{-10}`, 0.6%, of the positive's pull.

  Args:
    batch_size: the global batch `B` (every example's negatives are the other `B - 1`), >= 2.

  Returns:
    `b_0` as a float.
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
    raise ValueError(f"prior_bias needs a global batch size of at least 2, got {batch_size!r}.")
  return -math.log(batch_size - 1)


def l2_normalize(x: jax.Array, *, eps: float = 1e-12) -> tuple[jax.Array, jax.Array]:
  """`(x / max(||x||, eps), ||x||)` along the last axis, in float32."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps), norm[..., 0]


class Tower(nn.Module):
  """One modality: an encoder, a linear head to `embed_dim`, L2 normalization.

  Attributes:
    encoder: the encoder module; called as `encoder(x, train=...)`, returning
      `([batch, width], aux)`.
    embed_dim: the shared embedding size.
    proj_bias: whether the head has a bias (CLIP: no; SigLIP: yes).
    proj: whether there is a head at all; without one the encoder's pooled width must equal
      `embed_dim` (the image tower of SigLIP checkpoints in open_clip and transformers).
    lock_encoder: run the encoder in inference mode and stop its gradient (LiT).
    lock_head: also stop the head's gradient.
  """

  encoder: nn.Module
  embed_dim: int
  proj_bias: bool = False
  proj: bool = True
  lock_encoder: bool = False
  lock_head: bool = False

  @nn.compact
  def __call__(self, x: ArrayLike, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns `([batch, embed_dim] float32 unit vectors, {"features", "norm"})`."""
    features, _ = self.encoder(x, train=train and not self.lock_encoder)
    if self.lock_encoder:
      features = jax.lax.stop_gradient(features)
    features = features.astype(jnp.float32)
    if not self.proj:
      if features.shape[-1] != self.embed_dim:
        raise ValueError(
          f"A tower without a head needs encoder width {features.shape[-1]} to "
          f"equal embed_dim {self.embed_dim}."
        )
      embedding, norm = l2_normalize(features)
      return layers.constrain(embedding, ("batch", "joint")), {"features": features, "norm": norm}
    z = nn.Dense(
      self.embed_dim,
      use_bias=self.proj_bias,
      dtype=jnp.float32,
      param_dtype=jnp.float32,
      name="head",
      kernel_init=layers.partitioned(
        nn.initializers.normal(stddev=features.shape[-1] ** -0.5), ("embed", "joint")
      ),
      bias_init=layers.partitioned(nn.initializers.zeros, ("joint",)),
    )(features)
    if self.lock_head:
      z = jax.lax.stop_gradient(z)
    embedding, norm = l2_normalize(z)
    embedding = layers.constrain(embedding, ("batch", "joint"))
    return embedding, {"features": features, "norm": norm}


class TowerModel(nn.Module):
  """n-tower contrastive model (CLIP, SigLIP, LiT, and more than two modalities).

  Attributes:
    encoders: `{modality: encoder module}`; the encoders come unbound (e.g. `ViT("B/16")`).
    embed_dim: the shared embedding size.
    proj_bias: whether the heads have a bias: one bool, or `{modality: bool}` (missing: False).
    proj: whether the towers have a head: one bool, or `{modality: bool}` (missing: True).
    scale_init: the initial logit scale `t` (stored as `log t`).
    bias_init: the initial logit bias `b`, or None for a model without a bias.
    max_scale: the largest scale; `exp(log_scale)` is clipped there (no gradient beyond it).
      None: no clipping.
    locked: modalities whose tower is locked (LiT): `"image"` locks the encoder and head,
      `"image/encoder"` the encoder only; `"log_scale"` fixes the scale at `scale_init` (a
      fixed temperature, as in SimCLR or Wang & Liu), `"bias"` the bias at `bias_init`. A
      locked part runs in inference mode and passes no gradient; pair it with
      `trainable_mask(params, locked=model.locked)` in the optimizer.
  """

  encoders: Mapping[str, nn.Module]
  embed_dim: int
  proj_bias: bool | Mapping[str, bool] = False
  proj: bool | Mapping[str, bool] = True
  scale_init: float = CONVENTIONS["clip"]["scale_init"]
  bias_init: float | None = CONVENTIONS["clip"]["bias_init"]
  max_scale: float | None = CONVENTIONS["clip"]["max_scale"]
  locked: Sequence[str] = ()

  has_decoder = False  # no caption logits (a `CoCa` has a decoder)

  def __post_init__(self):
    if not self.encoders:
      raise ValueError("TowerModel needs at least one encoder.")
    for name, enc in self.encoders.items():
      if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"Modality names must be non-empty strings without '/', got {name!r}.")
      if not isinstance(enc, nn.Module):
        raise ValueError(
          f"The encoder of modality {name!r} must be a flax Module, got {type(enc).__name__}."
        )
    embed_dim = self.embed_dim
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
      raise ValueError(f"embed_dim must be a positive int, got {self.embed_dim!r}.")
    if not (isinstance(self.scale_init, (int, float)) and self.scale_init > 0):
      raise ValueError(f"scale_init must be a positive number, got {self.scale_init!r}.")
    if self.max_scale is not None and not (
      isinstance(self.max_scale, (int, float)) and self.max_scale > 0
    ):
      raise ValueError(f"max_scale must be a positive number or None, got {self.max_scale!r}.")
    if self.bias_init is not None and not isinstance(self.bias_init, (int, float)):
      raise ValueError(f"bias_init must be a number or None, got {self.bias_init!r}.")
    if isinstance(self.proj_bias, Mapping):
      self._check_modalities(self.proj_bias, what="proj_bias")
    if isinstance(self.proj, Mapping):
      self._check_modalities(self.proj, what="proj")
    for entry in self.locked:
      if entry not in {*self.encoders, *(f"{m}/encoder" for m in self.encoders), *SCALARS}:
        raise ValueError(
          f"Cannot lock {entry!r}: a locked entry is a modality, '<modality>/encoder' or one "
          f"of {list(SCALARS)}, with modalities {list(self.encoders)}."
        )
      if entry == "bias" and self.bias_init is None:
        raise ValueError("Cannot lock 'bias': the model has none (bias_init is None).")
    super().__post_init__()

  def _check_modalities(self, names, *, what: str) -> None:
    unknown = [name for name in names if name not in self.encoders]
    if unknown:
      raise ValueError(
        f"No encoder for modality {unknown[0]!r} (in {what}); the model's "
        f"modalities are {list(self.encoders)}."
      )

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.encoders)

  def dummy_batch(self, batch_size: int = 1) -> dict[str, jax.Array]:
    """Zeros of every modality's input shape and dtype, for `init`."""
    return {
      name: jnp.zeros(enc.dummy_input(batch_size).shape, enc.dummy_input(batch_size).dtype)
      for name, enc in self.encoders.items()
    }

  def _proj_bias(self, name: str) -> bool:
    if isinstance(self.proj_bias, Mapping):
      return bool(self.proj_bias.get(name, False))
    return bool(self.proj_bias)

  def _proj(self, name: str) -> bool:
    if isinstance(self.proj, Mapping):
      return bool(self.proj.get(name, True))
    return bool(self.proj)

  @nn.compact
  def __call__(
    self, batch: Mapping[str, ArrayLike], *, train: bool
  ) -> tuple[dict[str, jax.Array], dict[str, Any]]:
    """Embeds the modalities present in `batch`.

    Args:
      batch: `{modality: input}` for any subset of the model's modalities, e.g. `image`:
        `[batch, H, W, 3]` floats, `text`: `[batch, seq_len]` int32 ids (0 = padding). `init`
        needs every modality (`model.dummy_batch()`).
      train: enables dropout and stochastic depth (which need a `"dropout"` rng).

    Returns:
      `(embeddings, extras)`: `embeddings[modality]` is `[batch, embed_dim]` float32 with unit
      L2 norm; `extras` holds `scale` (the clipped `exp(log_scale)`, float32 scalar), `bias`
      (float32 scalar, or None), `log_scale` (the raw parameter) and per modality
      `{modality}/features` (the encoder's pooled `[batch, width]` output, float32) and
      `{modality}/norm` (`[batch]`, the norm before normalization).

    Raises:
      ValueError: `batch` has a key that is not a modality of the model.
    """
    self._check_modalities(batch, what="the batch")
    locked = set(self.locked)
    embeddings, extras = {}, {}
    for name, encoder in self.encoders.items():
      if name not in batch:
        continue
      tower = Tower(
        encoder.clone(parent=None, name=None),
        embed_dim=self.embed_dim,
        proj_bias=self._proj_bias(name),
        proj=self._proj(name),
        lock_encoder=name in locked or f"{name}/encoder" in locked,
        lock_head=name in locked,
        name=name,
      )
      embeddings[name], aux = tower(batch[name], train=train)
      extras.update({f"{name}/{key}": value for key, value in aux.items()})

    log_scale = self.param(
      "log_scale", nn.initializers.constant(math.log(self.scale_init)), (), jnp.float32
    )
    bias = None
    if self.bias_init is not None:
      bias = self.param("bias", nn.initializers.constant(self.bias_init), (), jnp.float32)
    extras.update(logit_scalars(log_scale, bias, locked=locked, max_scale=self.max_scale))
    return embeddings, extras


def logit_scalars(
  log_scale: jax.Array, bias: jax.Array | None, *, locked, max_scale: float | None
) -> dict[str, jax.Array | None]:
  """`{"scale", "bias", "log_scale"}` as a model's `extras` give them to the losses: the scale
  `exp(log_scale)` clipped at `max_scale` (no gradient beyond it), and a locked scalar (in
  `locked`) without gradient."""
  if "log_scale" in locked:
    log_scale = jax.lax.stop_gradient(log_scale)
  if max_scale is not None:
    scale = jnp.exp(jnp.minimum(log_scale, math.log(max_scale)))
  else:
    scale = jnp.exp(log_scale)
  if bias is not None and "bias" in locked:
    bias = jax.lax.stop_gradient(bias)
  return dict(scale=scale, bias=bias, log_scale=log_scale)
