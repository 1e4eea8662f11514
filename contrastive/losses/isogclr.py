r"""iSogCLR: a learned temperature per example, optimized with dataset-sized state.

The objective (Qiu et al., 2023), over the ``n`` pairs of the training set, with
:math:`d_{ij} = s_{ij} - s_{ii}` for the image anchor :math:`i` (and :math:`s_{ji} - s_{ii}` for
the text anchor, with a temperature of its own):

.. math::
  F(w, \tau) = \frac1n \sum_i \Big[ \tau_i \log \Big( \frac{1}{B-1} \sum_{j \ne i}
     e^{d_{ij}/\tau_i} \Big) + \tau_i \rho \Big], \qquad \tau_i \in [\tau_{min}, \tau_{max}]

is not a mean of per-batch terms (the log is outside the inner mean), so it is optimized as
SogCLR does: each example keeps :math:`u_i`, a moving average of its inner mean,

.. math::
  u_i \leftarrow (1 - \gamma)\, u_i + \gamma\, g_i, \qquad
  g_i = \frac{1}{B-1} \sum_{j \ne i} e^{d_{ij}/\tau_i},

the model follows :math:`\sum_{j \ne i} w_{ij} \nabla d_{ij}` with the constant weights
:math:`w_{ij} = e^{d_{ij}/\tau_i} / ((B-1)\, u_i)`, and :math:`\tau_i` its own gradient
:math:`\log u_i + \rho - \sum_j w_{ij} d_{ij}/\tau_i`, through a clipped moving average
(momentum) and a projected step. Everything per example (``u``, ``tau``, the momentum) is indexed
by example id, per modality; `contrastive.train.example_state` carries it in the train state.

A step, as pure functions of the batch's rows of that state: :func:`isogclr_estimates` (the
batch's :math:`\log g`, on the ring), :func:`isogclr_moving_average` (the new :math:`\log u`,
which the weights use), :func:`isogclr_loss` (the surrogate whose gradient is the paper's),
:func:`isogclr_weighted_z` (the temperatures' data term) and :func:`isogclr_tau_step`.

:math:`u` is kept as :math:`\log u`, which needs no overflow guard: the authors keep
:math:`u = s\, e^{b}` as a scaled sum :math:`s` and a running max :math:`b` of :math:`d/\tau`
(``exp`` overflows past :math:`d/\tau \approx 88`, and :math:`\tau = 0.005` reaches 400); the
ring's log-sum-exp is max-shifted per row already. :math:`\log u = -\infty` marks an example not
seen yet: its first estimate is taken as it is (the authors do so through the first epoch, in
which every example is seen once).

References:
  Qiu, Hu, Yuan, Zhou, Zhang, Yang. Not All Semantics are Created Equal: Contrastive
  Self-supervised Learning with Automatic Temperature Individualization. ICML 2023
  (arXiv:2305.11965); the update rules and defaults follow the authors' ``iSogCLR_Loss``
  (zhqiu/contrastive-learning-iSogCLR, ``bimodal_exps/models/losses.py``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses import _pairwise
from contrastive.losses import ring as ring_lib
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss

# The per-example state's rows the loss reads from the registry's `side`, beside the batch's ids.
ISOGCLR_STATE_KEYS = ("tau_x", "tau_y", "log_u_x", "log_u_y")


@dataclasses.dataclass(frozen=True)
class IsogclrOptions:
  """The state update's hyperparameters (the authors' bimodal defaults).

  Attributes:
    gamma: weight of the batch estimate in :math:`u`'s moving average.
    rho: :math:`\\rho`, the radius of the KL ball around uniform weights. The batch estimate
      of the temperature's gradient is :math:`\\rho - KL(p_i \\| \\text{uniform})` (with
      :math:`u = g`), and that KL is at most :math:`\\log(B - 1)`: above it every
      temperature falls to ``tau_min``.
    tau_init, tau_min, tau_max: the temperatures' start and range.
    eta: the temperatures' step size.
    beta: weight of the new (clipped) gradient in the temperatures' momentum.
    grad_clip: each temperature gradient is clipped to ``[-grad_clip, grad_clip]``.
  """

  gamma: float = 0.8
  rho: float = 8.0
  tau_init: float = 0.01
  tau_min: float = 0.005
  tau_max: float = 0.05
  eta: float = 0.03
  beta: float = 0.5
  grad_clip: float = 5.0

  def __post_init__(self):
    for name in ("gamma", "beta"):
      if not 0.0 < getattr(self, name) <= 1.0:
        raise ValueError(f"isogclr: {name} must be in (0, 1], got {getattr(self, name)!r}.")
    if not 0.0 < self.tau_min <= self.tau_init <= self.tau_max:
      raise ValueError(
        "isogclr: need 0 < tau_min <= tau_init <= tau_max, got "
        f"{self.tau_min!r}, {self.tau_init!r}, {self.tau_max!r}."
      )
    if self.eta < 0 or self.grad_clip <= 0:
      raise ValueError(
        f"isogclr: need eta >= 0 and grad_clip > 0, got {self.eta}, {self.grad_clip}."
      )


def isogclr_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  tau_x: jax.typing.ArrayLike,
  tau_y: jax.typing.ArrayLike,
  log_u_x: jax.typing.ArrayLike,
  log_u_y: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""iSogCLR's surrogate loss: its gradient in ``x`` and ``y`` is the paper's model gradient.

  With :math:`d_{ij} = x_i \cdot y_j - x_i \cdot y_i` (image anchors) and
  :math:`d'_{ij} = x_i \cdot y_j - x_j \cdot y_j` (text anchors :math:`j`):

  .. math::
    L = \frac1B \sum_i \sum_{j \ne i} sg\Big(\frac{e^{d_{ij}/\tau^x_i - \log u^x_i}}{B-1}\Big)
        d_{ij} + \frac1B \sum_j \sum_{i \ne j}
        sg\Big(\frac{e^{d'_{ij}/\tau^y_j - \log u^y_j}}{B-1}\Big) d'_{ij}

  (:math:`sg`: stop-gradient). With :math:`\log u` this step's moving average
  (:func:`isogclr_moving_average`) the weights of a row sum to about 1, and its gradient is that
  of :math:`\tau_i \log \frac{1}{B-1} \sum_{j \ne i} e^{d_{ij}/\tau_i}`. The temperatures and
  :math:`\log u` receive no gradient; the value itself is not the objective.

  Runs on the ring: a row sum and a column sum, linear, so value and gradient come from one
  fused pass; ``tau_y``, ``log_u_y`` and the positives travel with ``y``. Memory per device
  :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] image embeddings (the local shard under ``axis_name``).
    y: [batch, dim] text embeddings; ``y[i]`` is the positive of ``x[i]``.
    tau_x, tau_y: [batch] the examples' temperatures, as image and as text anchors.
    log_u_x, log_u_y: [batch] their :math:`\log u` (finite).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> x = y = jnp.eye(3)  # d_ij = -1 off the diagonal
    >>> tau, log_u = jnp.full(3, 0.5), jnp.full(3, -2.0)  # log u = log g: weights sum to 1
    >>> print(f"{isogclr_loss(x, y, tau, tau, log_u, log_u):.3f}")  # 2 directions x -1
    -2.000

  References:
    Qiu et al., Not All Semantics are Created Equal, ICML 2023; weights as the authors'
    ``iSogCLR_Loss`` (zhqiu/contrastive-learning-iSogCLR, ``bimodal_exps/models/losses.py``).
  """
  row, col = _side("isogclr_loss", x, y, tau_x, tau_y, log_u_x, log_u_y, axis_name, block_size)
  return ring_loss(_SURROGATE, x, y, {}, row, col, axis_name=axis_name, block_size=block_size)


def isogclr_estimates(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  tau_x: jax.typing.ArrayLike,
  tau_y: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  r"""The batch's :math:`\log g`: the log inner mean of every image and every text anchor.

  .. math::
    \log g^x_i = \log \frac{1}{B-1} \sum_{j \ne i} e^{d_{ij}/\tau^x_i}, \qquad
    \log g^y_j = \log \frac{1}{B-1} \sum_{i \ne j} e^{d'_{ij}/\tau^y_j}

  Two max-shifted log-sum-exps on the ring (forward only: no gradient flows). Args as
  :func:`isogclr_loss`.

  Returns:
    ``(log_g_x, log_g_y)``, [batch] float32 each, for the local rows.

  Example:
    >>> log_g_x, _ = isogclr_estimates(jnp.eye(3), jnp.eye(3), jnp.full(3, 0.5), jnp.full(3, 0.5))
    >>> print(log_g_x)  # d_ij / tau = -2
    [-2. -2. -2.]
  """
  row, col = _side("isogclr_estimates", x, y, tau_x, tau_y, None, None, axis_name, block_size)
  stats = _ring_stats(_ESTIMATES, x, y, row, col, axis_name, block_size)
  log_count = jnp.log(_global_batch(x, axis_name) - 1.0)
  return stats["g_x"] - log_count, stats["g_y"] - log_count


def isogclr_weighted_z(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  tau_x: jax.typing.ArrayLike,
  tau_y: jax.typing.ArrayLike,
  log_u_x: jax.typing.ArrayLike,
  log_u_y: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  r""":math:`\sum_j w_{ij}\, d_{ij} / \tau_i` per image and per text anchor (forward only).

  The data term of the temperature's gradient (:func:`isogclr_tau_step`), with the weights
  :math:`w` of :func:`isogclr_loss`: the same ring pass, its row and column sums read out. Args
  as :func:`isogclr_loss`.

  Returns:
    ``(q_x, q_y)``, [batch] float32 each, for the local rows.
  """
  row, col = _side(
    "isogclr_weighted_z", x, y, tau_x, tau_y, log_u_x, log_u_y, axis_name, block_size
  )
  stats = _ring_stats(_SURROGATE, x, y, row, col, axis_name, block_size)
  count = _global_batch(x, axis_name) - 1.0
  return stats["x"] / (count * row["tau"]), stats["y"] / (count * col["tau"])


def isogclr_moving_average(
  log_u: jax.typing.ArrayLike, log_g: jax.typing.ArrayLike, gamma: float
) -> jax.Array:
  r""":math:`\log u \leftarrow \log((1 - \gamma)\, u + \gamma\, g)`; an unseen example
  (:math:`\log u = -\infty`) takes :math:`\log g`.

  Args:
    log_u: [batch] the examples' :math:`\log u`, :math:`-\infty` where not seen yet.
    log_g: [batch] this batch's estimates (:func:`isogclr_estimates`).
    gamma: :math:`\gamma \in (0, 1]`.

  Returns:
    [batch] float32, the new :math:`\log u`.
  """
  log_u, log_g = jnp.asarray(log_u, jnp.float32), jnp.asarray(log_g, jnp.float32)
  keep = jnp.log1p(-gamma) + log_u if gamma < 1 else jnp.full_like(log_u, -jnp.inf)
  mixed = jnp.logaddexp(keep, jnp.log(gamma) + log_g)
  return jnp.where(jnp.isneginf(log_u), log_g, mixed)


def isogclr_tau_step(
  tau: jax.typing.ArrayLike,
  momentum: jax.typing.ArrayLike,
  log_u: jax.typing.ArrayLike,
  weighted_z: jax.typing.ArrayLike,
  options: IsogclrOptions = IsogclrOptions(),
) -> tuple[jax.Array, jax.Array]:
  r"""The temperatures' update, after the loss:

  .. math::
    \nabla_i = \log u_i + \rho - \sum_j w_{ij} d_{ij}/\tau_i, \quad
    m_i \leftarrow (1 - \beta)\, m_i + \beta\, \mathrm{clip}(\nabla_i, \pm c), \quad
    \tau_i \leftarrow \Pi_{[\tau_{min}, \tau_{max}]}(\tau_i - \eta\, m_i)

  Args:
    tau: [batch] the temperatures the loss used.
    momentum: [batch] their gradients' moving average :math:`m`.
    log_u: [batch] this step's :math:`\log u` (:func:`isogclr_moving_average`).
    weighted_z: [batch] :func:`isogclr_weighted_z`.
    options: :math:`\rho, \beta, c, \eta` and the range.

  Returns:
    ``(tau, momentum)``, the new values, [batch] float32.
  """
  o = options
  grad = jnp.clip(log_u + o.rho - weighted_z, -o.grad_clip, o.grad_clip)
  momentum = (1.0 - o.beta) * jnp.asarray(momentum, jnp.float32) + o.beta * grad
  return jnp.clip(tau - o.eta * momentum, o.tau_min, o.tau_max), momentum


# ----------------------------------------------------------------------------------------------
# Tiles and plumbing.


def _side(fn, x, y, tau_x, tau_y, log_u_x, log_u_y, axis_name, block_size):
  """Checked per-row (image anchor) and per-column (text anchor) side data: temperature, the
  positive's similarity and, for the weights, log u; no gradient reaches tau or log u."""
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_block_size(fn, block_size)
  b = np.shape(x)[0]
  _pairwise.check_global_batch(fn, b, axis_name)
  vectors = dict(tau_x=tau_x, tau_y=tau_y)
  if log_u_x is not None:
    vectors.update(log_u_x=log_u_x, log_u_y=log_u_y)
  for name, v in vectors.items():
    if np.shape(v) != (b,):
      raise ValueError(f"{fn}: `{name}` must be [batch] = ({b},), got shape {np.shape(v)}.")
  f32 = lambda v: jax.lax.stop_gradient(jnp.asarray(v, jnp.float32))
  pos = _pairwise.rowdot(x, y)
  row, col = {"tau": f32(tau_x), "pos": pos}, {"tau": f32(tau_y), "pos": pos}
  if log_u_x is not None:
    row["log_u"], col["log_u"] = f32(log_u_x), f32(log_u_y)
  return row, col


def _global_batch(x, axis_name) -> float:
  return float(np.shape(x)[0] * ring_lib.axis_size(axis_name))


def _ring_stats(loss: TileLoss, x, y, row, col, axis_name, block_size):
  """The local rows' and columns' reduced statistics of one forward ring pass, no gradient."""
  return ring_lib.ring_stats(
    loss, jnp.asarray(x), jnp.asarray(y), {}, row, col, axis_name=axis_name, block_size=block_size
  )


def _scaled_differences(tile: Tile):
  """d/tau of image anchors (rows) and of text anchors (columns), -inf on the positives."""
  sim, off = tile.sim, ~tile.positive
  d_x, d_y = sim - tile.row["pos"][:, None], sim - tile.col["pos"][None, :]
  # The engine's padding rows come with tau = 0: a finite stand-in keeps NaN out of the VJP.
  safe = lambda tau: jnp.where(tau > 0, tau, 1.0)
  z_x = jnp.where(off, d_x / safe(tile.row["tau"])[:, None], -jnp.inf)
  z_y = jnp.where(off, d_y / safe(tile.col["tau"])[None, :], -jnp.inf)
  return d_x, d_y, z_x, z_y


def _estimates_tile(tile: Tile):
  _, _, z_x, z_y = _scaled_differences(tile)
  return {"g_x": z_x, "g_y": z_y}


def _surrogate_tile(tile: Tile):
  d_x, d_y, z_x, z_y = _scaled_differences(tile)
  w_x = jnp.exp(jax.lax.stop_gradient(z_x) - tile.row["log_u"][:, None])
  w_y = jnp.exp(jax.lax.stop_gradient(z_y) - tile.col["log_u"][None, :])
  # w is 0 on the positives (and d is 0 there): a product, not a where, keeps the sum's VJP.
  return {"x": w_x * d_x, "y": w_y * d_y}


def _surrogate_finalize(home: ReducedBlock):
  b = home.global_batch
  return (jnp.sum(home.stats["x"]) + jnp.sum(home.stats["y"])) / (b * (b - 1))


_ESTIMATES = TileLoss(
  tile_fn=_estimates_tile,
  reductions={"g_x": "row_lse", "g_y": "col_lse"},
  finalize_fn=lambda home: jnp.zeros((), jnp.float32),
)
_SURROGATE = TileLoss(
  tile_fn=_surrogate_tile,
  reductions={"x": "row_sum", "y": "col_sum"},
  finalize_fn=_surrogate_finalize,
  linear=True,
)
