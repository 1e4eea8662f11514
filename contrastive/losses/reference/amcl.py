"""Dense reference of AMCL (Wang et al., ECCV 2024), as in the authors' ``AMCLNTXentLoss`` with the
two modalities' cross pairs as negatives.

For tests and small batches only: materializes ``[heads, B, B]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["amcl_loss"]


def _unit_heads(e, num_heads):
  z = e.astype(jnp.float32).reshape(e.shape[0], num_heads, -1)
  return z / jnp.linalg.norm(z, axis=-1, keepdims=True)


def amcl_loss(
  x,
  y,
  phi_x=None,
  phi_y=None,
  *,
  num_heads=1,
  top_k=None,
  beta=0.01,
  tau_min=1e-5,
  tau_max=2.0,
  block_size=None,
):
  """sum_h mean_i [l^h_i(x -> y) + l^h_i(y -> x)] / 2, with
  l = -s_pos / tau_pos + mean_{top-k neg} s / tau + beta Omega(tau_pos)
      - beta sum_{top-k neg} (log tau + 1 / tau),
  tau(z, z') = tau_min + (tau_max - tau_min) sigmoid(-phi(z) . phi(z')), Omega = d/2 log + 1/tau.
  """
  del block_size
  n = x.shape[0]
  zx, zy = _unit_heads(x, num_heads), _unit_heads(y, num_heads)
  d = zx.shape[-1]
  sims = jnp.einsum("ihd,jhd->hij", zx, zy, precision="highest")  # [heads, B, B]
  if phi_x is None:
    scores = sims
  else:
    px = phi_x if phi_x.ndim == 3 else phi_x[:, None, :]
    py = phi_y if phi_y.ndim == 3 else phi_y[:, None, :]
    scores = jnp.einsum("ihp,jhp->hij", px, py, precision="highest") * jnp.ones_like(sims)
  taus = tau_min + (tau_max - tau_min) * jax.nn.sigmoid(-scores)
  k = n - 1 if top_k is None else min(top_k, n - 1)  # as the authors
  others = ~jnp.eye(n, dtype=bool)

  def omega(tau):
    return 0.5 * d * jnp.log(tau) + 1.0 / tau

  def one_way(s, tau):  # anchors along rows, [B, B]
    negatives = jnp.where(others, s, -jnp.inf)
    top_s, idx = jax.lax.top_k(negatives, k)  # ties: the smaller index
    top_tau = jnp.take_along_axis(tau, idx, axis=1)
    pos_s, pos_tau = jnp.diag(s), jnp.diag(tau)
    loss = (
      -pos_s / pos_tau
      + jnp.mean(top_s / top_tau, axis=1)
      + beta * omega(pos_tau)
      - beta * jnp.sum(jnp.log(top_tau) + 1.0 / top_tau, axis=1)
    )
    return jnp.mean(loss)

  per_head = [(one_way(s, tau) + one_way(s.T, tau.T)) / 2 for s, tau in zip(sims, taus)]
  return jnp.sum(jnp.stack(per_head))
