r"""Training-time tools against the modality gap: centering, noise, swapping, a scale schedule.

Each acts on the embeddings (or the logit scale) *before* any loss, so every ring loss can use
them; the trainer applies them when `config.loss` sets `center`, `embedding_noise`,
`swap_fraction` or `scale_schedule` (`GapTools.from_config`), in that order:

1. collapse (C³): :math:`x_i \leftarrow x_i - \frac{1}{B}\sum_j x_j` per modality, the mean over
   the *global* batch (a `psum` over the batch axes);
2. corrupt (C³; CLOSE): :math:`x_i \leftarrow x_i + \epsilon_i`, :math:`\epsilon_i \sim
   \mathcal{N}(0, \sigma^2 I)`;
3. swap (Yaras et al.): with probability :math:`p` per pair, :math:`(x_i, y_i) \leftarrow
   (y_i, x_i)`, so each tower's output sits on both sides of the loss;
4. re-normalize to the unit sphere (the losses' logits are cosines times the scale).

The temperature schedule replaces the learned scale by :math:`t(s) = 1/\tau(s)`, with
:math:`\tau` going from `start_tau` to `end_tau` over the run, linearly or by a half cosine.

The noise and swap draws are made on the global batch (`make_transform`), so a run's
embeddings do not depend on the number of devices.

References:
  Zhang et al., Connect, Collapse, Corrupt: Learning Cross-Modal Tasks with Uni-Modal Data,
  ICLR 2024 (arXiv:2401.08567). Gu et al., I Can't Believe There's No Images! Learning Visual
  Tasks Using only Language Supervision, ICCV 2023 (arXiv:2211.09778). Yaras et al., Explaining
  and Mitigating the Modality Gap in Contrastive Multimodal Learning, 2024 (arXiv:2412.07909).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

CONFIG_KEYS = ("center", "embedding_noise", "swap_fraction", "scale_schedule")


def center(x: jax.Array, *, axis_name: str | tuple[str, ...] | None = None) -> jax.Array:
  r"""Subtracts the batch mean: :math:`x_i - \frac{1}{B} \sum_j x_j` (C³'s collapse).

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    axis_name: the ``jax.shard_map`` axes the batch is split over; the mean is then over the
      global batch (a ``psum``). None: ``x`` is the whole batch.

  Returns:
    [batch, dim] centered embeddings, same dtype.

  Example:
    >>> center(jnp.array([[1.0, 0.0], [0.0, 1.0]]))
    Array([[ 0.5, -0.5],
           [-0.5,  0.5]], dtype=float32)
  """
  total = jnp.sum(x, axis=0, dtype=jnp.float32)
  count = jnp.asarray(x.shape[0], jnp.float32)
  if axis_name is not None:
    total, count = jax.lax.psum((total, count), axis_name)
  return (x - total / count).astype(x.dtype)


def swap_pairs(x: jax.Array, y: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  r"""Exchanges the rows of ``x`` and ``y`` where ``mask``: :math:`(x_i, y_i) \to (y_i, x_i)`.

  Args:
    x, y: [batch, dim] paired embeddings.
    mask: [batch] bool, the pairs to swap.

  Returns:
    ``(x', y')``, [batch, dim] each.

  Example:
    >>> x, y = jnp.zeros((2, 1)), jnp.ones((2, 1))
    >>> swap_pairs(x, y, jnp.array([True, False]))[0][:, 0]
    Array([1., 0.], dtype=float32)
  """
  m = mask[:, None]
  return jnp.where(m, y, x), jnp.where(m, x, y)


def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm (in float32; a zero row stays zero)."""
  x32 = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True))
  return (x32 / jnp.maximum(norm, 1e-12)).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class ScaleSchedule:
  r"""The logit scale as a function of the step: :math:`t(s) = 1 / \tau(s)`.

  With :math:`p = \min(s / S, 1)`: ``linear`` :math:`\tau = \tau_0 + (\tau_1 - \tau_0) p`;
  ``cosine`` :math:`\tau = \tau_1 + (\tau_0 - \tau_1)(1 + \cos \pi p) / 2`.

  Attributes:
    start_tau, end_tau: :math:`\tau_0` and :math:`\tau_1` (positive).
    steps: :math:`S`, the run's length.
    kind: ``"linear"`` or ``"cosine"``.

  Example:
    >>> float(ScaleSchedule(0.1, 0.01, steps=10)(5))  # tau 0.055
    18.18...
  """

  start_tau: float
  end_tau: float
  steps: int
  kind: Literal["linear", "cosine"] = "linear"

  def __post_init__(self):
    if not (self.start_tau > 0 and self.end_tau > 0):
      raise ValueError(
        f"loss.scale_schedule needs positive start_tau and end_tau, got {self.start_tau!r} "
        f"and {self.end_tau!r}."
      )
    if self.kind not in ("linear", "cosine"):
      raise ValueError(f"loss.scale_schedule.kind must be 'linear' or 'cosine', got {self.kind!r}.")
    if not self.steps > 0:
      raise ValueError(f"loss.scale_schedule needs a positive number of steps, got {self.steps}.")

  def tau(self, step: jax.typing.ArrayLike) -> jax.Array:
    p = jnp.clip(jnp.asarray(step, jnp.float32) / self.steps, 0.0, 1.0)
    if self.kind == "linear":
      return self.start_tau + (self.end_tau - self.start_tau) * p
    return self.end_tau + (self.start_tau - self.end_tau) * (1 + jnp.cos(math.pi * p)) / 2

  def __call__(self, step: jax.typing.ArrayLike) -> jax.Array:
    return 1.0 / self.tau(step)


@dataclasses.dataclass(frozen=True)
class GapTools:
  """Which tools a run uses (`from_config` reads them from `config.loss`).

  Attributes:
    center: subtract each modality's global-batch mean.
    noise: sigma of the Gaussian noise added to each embedding (0: none).
    swap: the probability that a pair's two embeddings are exchanged (two modalities only).
    renormalize: project the transformed embeddings back on the unit sphere.
    scale_schedule: the logit scale's schedule, replacing the learned one; None: learned.
  """

  center: bool = False
  noise: float = 0.0
  swap: float = 0.0
  renormalize: bool = True
  scale_schedule: ScaleSchedule | None = None

  def __post_init__(self):
    if not (self.noise >= 0 and math.isfinite(self.noise)):
      raise ValueError(f"loss.embedding_noise must be a sigma >= 0, got {self.noise!r}.")
    if not 0 <= self.swap <= 1:
      raise ValueError(f"loss.swap_fraction must be in [0, 1], got {self.swap!r}.")

  @property
  def transforms(self) -> bool:
    """Whether the embeddings are changed before the loss."""
    return bool(self.center or self.noise or self.swap)

  @classmethod
  def from_config(cls, loss: Mapping[str, Any], total_steps: int) -> GapTools | None:
    """The tools `config.loss` asks for: `center` (bool), `embedding_noise` (sigma),
    `swap_fraction` (p), `scale_schedule` (`{start_tau, end_tau, kind}`); None: none."""
    sched = loss.get("scale_schedule")
    if sched:
      sched = dict(sched)
      unknown = sorted(set(sched) - {"start_tau", "end_tau", "kind"})
      if unknown or not {"start_tau", "end_tau"} <= set(sched):
        raise ValueError(
          "loss.scale_schedule takes start_tau, end_tau and kind ('linear' or 'cosine'); "
          f"got {sorted(sched)}."
        )
      sched = ScaleSchedule(steps=int(total_steps), **sched)
    tools = cls(
      center=bool(loss.get("center") or False),
      noise=float(loss.get("embedding_noise") or 0.0),
      swap=float(loss.get("swap_fraction") or 0.0),
      scale_schedule=sched or None,
    )
    return tools if tools.transforms or tools.scale_schedule else None


def transform_shard(
  embeddings: Sequence[jax.Array],
  noise: Sequence[jax.Array] | None,
  mask: jax.Array | None,
  tools: GapTools,
  *,
  axis_name: str | tuple[str, ...] | None = None,
) -> list[jax.Array]:
  """Center, add ``noise``, swap where ``mask`` and re-normalize, on one shard (or all rows).

  Args:
    embeddings: [batch, dim] arrays, one per modality (local shards under ``axis_name``).
    noise: the draws to add, shaped as ``embeddings`` (already times sigma); None: none.
    mask: [batch] bool, the pairs to swap (two modalities); None: none.
    tools: the options (``center``, ``renormalize``).
    axis_name: the batch axes of ``jax.shard_map``, for the centering's global mean.

  Returns:
    The transformed embeddings, a list in the same order.
  """
  out = list(embeddings)
  if tools.center:
    out = [center(x, axis_name=axis_name) for x in out]
  if noise is not None:
    out = [x + e.astype(x.dtype) for x, e in zip(out, noise)]
  if mask is not None:
    out = list(swap_pairs(out[0], out[1], mask))
  return [l2_normalize(x) for x in out] if tools.renormalize else out


def make_transform(tools: GapTools, mesh: Mesh | None = None, axes=None):
  """`(embeddings list, rng) -> embeddings list` on global arrays, the batch over `axes` of
  `mesh` (None: no mesh, one device's whole batch).

  The noise (`normal * sigma`) and the swap mask are drawn on the global shape from `rng`, so
  they do not depend on the devices; the centering runs inside `jax.shard_map` with a `psum`.
  """

  def draws(embeddings, rng):
    k_noise, k_swap = jax.random.split(rng)
    noise = None
    if tools.noise:
      keys = jax.random.split(k_noise, len(embeddings))
      noise = [
        tools.noise * jax.random.normal(k, x.shape, jnp.float32) for k, x in zip(keys, embeddings)
      ]
    mask = None
    if tools.swap:
      if len(embeddings) != 2:
        raise ValueError(
          f"loss.swap_fraction swaps pairs of two modalities; this model has {len(embeddings)}."
        )
      mask = jax.random.bernoulli(k_swap, tools.swap, (embeddings[0].shape[0],))
    return noise, mask

  def fn(embeddings, rng):
    embeddings = list(embeddings)
    noise, mask = draws(embeddings, rng)
    if mesh is None:
      return transform_shard(embeddings, noise, mask, tools)
    body = lambda e, n, m: transform_shard(e, n, m, tools, axis_name=axes)
    spec = P(axes)
    specs = jax.tree.map(lambda _: spec, (embeddings, noise, mask))
    return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=spec)(embeddings, noise, mask)

  return fn


def with_log_scale(params: Mapping[str, Any], scale: jax.Array) -> dict[str, Any]:
  """`params` with `log_scale` set to `log(scale)` (a scheduled scale the model then carries)."""
  if "log_scale" not in params:
    raise ValueError("loss.scale_schedule needs a model with a logit scale (params['log_scale']).")
  params = dict(params)
  params["log_scale"] = jnp.log(scale).astype(params["log_scale"].dtype)
  return params
