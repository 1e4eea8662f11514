"""Symile's O(B^2) negatives on a nested ring: every (i, j, k) triple of three modalities.

The logits :math:`T_{ijk} = t \\sum_d a_{id} b_{jd} c_{kd}` form a ``[B, B, B]`` cube; each
modality's anchor loss needs one log-sum-exp over the other two axes (``lse_a[i]`` over ``(j,
k)``, ``lse_b[j]`` over ``(i, k)``, ``lse_c[k]`` over ``(i, j)``). Not a reduction of a pair
tile, so not the `ring` engine's: here ``a`` stays home, the ``b`` block travels an outer ring
of ``N`` hops and, inside each, the ``c`` block an inner ring of ``N`` hops, so every device
meets every ``(b, c)`` block pair once. Each block carries its own statistic (and in the
backward pass its gradient) and is home after its ring. Per device: ``N^2`` local cubes
``[b, b, b]`` (compute :math:`O(B^3 d / N)`), memory :math:`O(b d + b^3)`.

The backward pass recomputes each cube: the cotangent of a hop's log-sum-exp is the statistic's
cotangent times :math:`\\exp(\\mathrm{lse}_{hop} - \\mathrm{lse})`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from contrastive.losses import ring_pass


def cube_lse(a, b, c, scale, axis_name, n_dev):
  """``(lse_a, lse_b, lse_c)``, each ``[b]`` float32, of the local rows over the global cube."""
  scale = jnp.asarray(scale, jnp.float32)
  if axis_name is not None:
    scale = ring_pass.vary(scale, axis_name)
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  return _cube_lse((axis_name, n_dev), f32(a), f32(b), f32(c), scale)


def _hop(a, b, c, scale):
  cube = scale * jnp.einsum("id,jd,kd->ijk", a, b, c)
  lse = jax.nn.logsumexp
  return lse(cube, axis=(1, 2)), lse(cube, axis=(0, 2)), lse(cube, axis=(0, 1))


def _nested_ring(ring, visit, home, b_block, c_block):
  """Calls ``visit(home, b_block, c_block)`` for every pair of blocks that meet on this device;
  each block (a dict carried with its ring) returns home."""
  axis_name, n_dev = ring
  perm = [(i, (i + 1) % n_dev) for i in range(n_dev)]
  send = lambda tree: jax.tree.map(lambda v: jax.lax.ppermute(v, axis_name, perm), tree)

  def inner(_, carry):
    home, b_block, c_block = visit(*carry)
    return home, b_block, c_block if n_dev == 1 else send(c_block)

  def outer(_, carry):
    home, b_block, c_block = jax.lax.fori_loop(0, n_dev, inner, carry)
    return home, b_block if n_dev == 1 else send(b_block), c_block

  return jax.lax.fori_loop(0, n_dev, outer, (home, b_block, c_block))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _cube_lse(ring, a, b, c, scale):
  return _cube_lse_fwd(ring, a, b, c, scale)[0]


def _cube_lse_fwd(ring, a, b, c, scale):
  none = ring_pass.vary(jnp.full(a.shape[:1], -jnp.inf, jnp.float32), ring[0])

  def visit(home, b_block, c_block):
    hop = _hop(a, b_block["x"], c_block["x"], scale)
    return (
      {"lse": jnp.logaddexp(home["lse"], hop[0])},
      {**b_block, "lse": jnp.logaddexp(b_block["lse"], hop[1])},
      {**c_block, "lse": jnp.logaddexp(c_block["lse"], hop[2])},
    )

  home, b_block, c_block = _nested_ring(
    ring, visit, {"lse": none}, {"x": b, "lse": none}, {"x": c, "lse": none}
  )
  stats = (home["lse"], b_block["lse"], c_block["lse"])
  return stats, (a, b, c, scale, stats)


def _cube_lse_bwd(ring, residuals, cts):
  a, b, c, scale, (lse_a, lse_b, lse_c) = residuals
  ct_a, ct_b, ct_c = cts
  finite = lambda v: jnp.where(jnp.isfinite(v), v, 0.0)

  def visit(home, b_block, c_block):
    hop, vjp = jax.vjp(_hop, a, b_block["x"], c_block["x"], scale)
    da, db, dc, dscale = vjp(
      (
        ct_a * jnp.exp(hop[0] - finite(lse_a)),
        b_block["ct"] * jnp.exp(hop[1] - finite(b_block["lse"])),
        c_block["ct"] * jnp.exp(hop[2] - finite(c_block["lse"])),
      )
    )
    home = {"da": home["da"] + da, "dscale": home["dscale"] + dscale}
    return (
      home,
      {**b_block, "dx": b_block["dx"] + db},
      {**c_block, "dx": c_block["dx"] + dc},
    )

  zeros = jnp.zeros_like
  home, b_block, c_block = _nested_ring(
    ring,
    visit,
    {"da": zeros(a), "dscale": zeros(scale)},
    {"x": b, "lse": lse_b, "ct": ct_b, "dx": zeros(b)},
    {"x": c, "lse": lse_c, "ct": ct_c, "dx": zeros(c)},
  )
  return home["da"], b_block["dx"], c_block["dx"], home["dscale"]


_cube_lse.defvjp(_cube_lse_fwd, _cube_lse_bwd)
