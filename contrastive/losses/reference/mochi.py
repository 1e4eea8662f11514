"""MoCHi's loss on the whole batch and the whole queue, as the paper writes it."""

import jax
import jax.numpy as jnp


def mochi_loss(
  q, k, queue, scale, rng, *, num_hard=16, num_mix=16, num_query_mix=8, block_size=None
):
  """MoCHi (Kalantidis et al., 2020): MoCo's InfoNCE, mean_i -log e^{t q.k} / (e^{t q.k} +
  sum_r e^{t q.n_r} + sum_s e^{t q.h_s} + sum_s' e^{t q.h'_s'}), with, from the N queue entries
  of largest q.n (sorted, hardest first), h = normalize(a n_i + (1 - a) n_j) and
  h' = normalize(b q + (1 - b) n_j), both detached, drawn as `contrastive.losses.mochi`
  draws them from `rng` (the same numbers).
  """
  del block_size
  q, k, queue = (jnp.asarray(a, jnp.float32) for a in (q, k, queue))
  keys = jax.random.split(rng, 4)
  batch = q.shape[0]
  d = {
    "pairs": jax.random.randint(keys[0], (batch, num_mix, 2), 0, num_hard, jnp.int32),
    "alpha": jax.random.uniform(keys[1], (batch, num_mix)),  # ~ U(0, 1)
    "partner": jax.random.randint(keys[2], (batch, num_query_mix), 0, num_hard, jnp.int32),
    "beta": 0.5 * jax.random.uniform(keys[3], (batch, num_query_mix)),  # ~ U(0, 1/2)
  }
  positive = scale * jnp.sum(q * k, axis=-1)
  queue_logits = scale * q @ queue.T
  _, hardest = jax.lax.top_k(jax.lax.stop_gradient(queue_logits), num_hard)  # [B, N]
  n = jax.lax.stop_gradient(queue)[hardest]  # [B, N, d]
  rows = jnp.arange(q.shape[0])[:, None]
  a, b = d["alpha"][..., None], d["beta"][..., None]
  h = a * n[rows, d["pairs"][..., 0]] + (1 - a) * n[rows, d["pairs"][..., 1]]
  h_q = b * q[:, None] + (1 - b) * n[rows, d["partner"]]
  unit = lambda v: v / jnp.linalg.norm(v, axis=-1, keepdims=True)
  synthetic = jax.lax.stop_gradient(unit(jnp.concatenate([h, h_q], axis=1)))
  logits = jnp.concatenate(
    [positive[:, None], queue_logits, scale * jnp.einsum("bd,bsd->bs", q, synthetic)], axis=1
  )
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive)
