"""The TPU's default matrix product, emulated on any backend, to see what it does to a loss.

At the default precision, XLA:TPU multiplies float32 operands in one pass of the MXU: each
operand rounded to bfloat16 (8 bits of mantissa), the products summed in float32. The optimized
HLO of the ring shows it: the embeddings are converted to ``bf16`` before the similarity
``convolution``. The CPU computes float32 at every precision, so :func:`bf16_matmul` rounds the
operands itself, in the forward product and in both products of its gradient, as the TPU does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def round_to_bf16(a: jax.Array) -> jax.Array:
  """`a` rounded to the nearest bfloat16 (ties to even), in its own dtype."""
  return a.astype(jnp.bfloat16).astype(a.dtype)


@jax.custom_vjp
def bf16_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  r"""[m, k] x [n, k] -> [m, n] float32 :math:`\mathrm{bf16}(a)\, \mathrm{bf16}(b)^T`, summed in
  float32: one MXU pass of the TPU at the default precision. Its gradient takes the same
  rounding in both of its products, :math:`\mathrm{bf16}(g)\,\mathrm{bf16}(b)` and
  :math:`\mathrm{bf16}(g)^T \mathrm{bf16}(a)`."""
  return jnp.dot(round_to_bf16(a), round_to_bf16(b).T, preferred_element_type=jnp.float32)


def _bf16_matmul_fwd(a, b):
  return bf16_matmul(a, b), (a, b)


def _bf16_matmul_bwd(residuals, g):
  a, b = residuals
  g = round_to_bf16(g)
  return (
    jnp.dot(g, round_to_bf16(b), preferred_element_type=jnp.float32).astype(a.dtype),
    jnp.dot(g.T, round_to_bf16(a), preferred_element_type=jnp.float32).astype(b.dtype),
  )


bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)
