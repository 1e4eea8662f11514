"""Dense references of the pairwise zoo losses: each paper's equation over the full matrix.

For tests and small batches only: every function here materializes ``[B, B]`` (or more). Same
names and signatures as in `contrastive.losses`, without ``axis_name``; ``block_size`` is
accepted and ignored.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp

from contrastive.losses.reference.clip import softmax_loss

__all__ = [
  "align_uniform_loss",
  "auc_mw_loss",
  "contrastive_gap_loss",
  "cwcl_targets",
  "dcl_loss",
  "dclw_loss",
  "hard_negative_loss",
  "kernel_infonce_loss",
  "macl_loss",
  "mixup_targets",
  "multi_positive_loss",
  "sigmoid_focal_loss",
  "soft_target_loss",
  "softmax_focal_loss",
  "supcon_loss",
  "teacher_logits",
]

_HI = jax.lax.Precision.HIGHEST


def _sim(a, b):
  return jnp.dot(a, b.T, precision=_HI, preferred_element_type=jnp.float32)


def _off_diagonal(n):
  return ~jnp.eye(n, dtype=bool)


def _masked_logsumexp(logits, keep, axis):
  return jax.nn.logsumexp(jnp.where(keep, logits, -jnp.inf), axis=axis)


# ----------------------------------------------------------------------------------------------
# DCL / DCLW (Yeh et al., 2022).


def dcl_loss(x, y, scale, *, intra_modal=False, block_size=None):
  """-(1/2B) sum_i [l_ii - log sum_{j!=i} e^{l_ij}] + the same with x and y swapped."""
  return _dcl(x, y, scale, None, intra_modal)


def dclw_loss(x, y, scale, *, sigma=0.5, intra_modal=False, block_size=None):
  """DCL with positive weights w_i = 2 - B softmax_i(x_i.y_i / sigma) (not stop-gradient)."""
  return _dcl(x, y, scale, sigma, intra_modal)


def _dcl(x, y, scale, sigma, intra_modal):
  n = x.shape[0]
  off = _off_diagonal(n)
  sim = _sim(x, y)
  positive = scale * jnp.diag(sim)
  weight = 1.0 if sigma is None else 2.0 - n * jax.nn.softmax(jnp.diag(sim) / sigma)
  neg_x = [scale * sim, scale * _sim(x, x)] if intra_modal else [scale * sim]
  neg_y = [scale * sim.T, scale * _sim(y, y)] if intra_modal else [scale * sim.T]
  keep = jnp.concatenate([off] * len(neg_x), axis=1)
  lse_x = _masked_logsumexp(jnp.concatenate(neg_x, axis=1), keep, axis=1)
  lse_y = _masked_logsumexp(jnp.concatenate(neg_y, axis=1), keep, axis=1)
  return jnp.mean((-weight * positive + lse_x) + (-weight * positive + lse_y)) / 2


# ----------------------------------------------------------------------------------------------
# Alignment and uniformity (Wang & Isola, 2020); the contrastive gap's CUA / CUAXU (Fahim et al.).


def _sq_dists(a, b):
  return jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


def _alignment(x, y, alpha):
  """E_i ||x_i - y_i||^alpha."""
  return jnp.mean(jnp.sum((x - y) ** 2, axis=1) ** (alpha / 2))


def _uniformity(a, b, t):
  """log mean_{i != j} exp(-t ||a_i - b_j||^2)."""
  n = a.shape[0]
  return _masked_logsumexp(-t * _sq_dists(a, b), _off_diagonal(n), axis=None) - jnp.log(
    n * (n - 1.0)
  )


def align_uniform_loss(x, y, *, alpha=2.0, t=2.0, lam=1.0, block_size=None):
  """align(x, y) + lam * (unif(x) + unif(y)) / 2."""
  return _alignment(x, y, alpha) + lam * (_uniformity(x, x, t) + _uniformity(y, y, t)) / 2


def contrastive_gap_loss(x, y, scale, *, variant="cuaxu", alpha=2.0, t=2.0, block_size=None):
  """CUA = CLIP + align + (unif(x) + unif(y)) / 2; CUAXU adds the cross-modal uniformity."""
  loss = (
    softmax_loss(x, y, scale)
    + _alignment(x, y, alpha)
    + (_uniformity(x, x, t) + _uniformity(y, y, t)) / 2
  )
  return loss + _uniformity(x, y, t) if variant == "cuaxu" else loss


# ----------------------------------------------------------------------------------------------
# SupCon (Khosla et al., 2020) and multi-positive InfoNCE (MIL-NCE, Miech et al., 2020).


def supcon_loss(x, y, scale, labels, *, intra_modal=False, block_size=None):
  """L_out: -mean_i (1/|P(i)|) sum_{p in P(i)} log softmax over the anchor's candidates."""
  same = labels[:, None] == labels[None, :]
  if intra_modal:  # SupConLoss(contrast_mode="all") over the 2B views [x; y]
    z = jnp.concatenate([x, y])
    n = z.shape[0]
    same2 = jnp.tile(same, (2, 2))
    others = _off_diagonal(n)
    logits = scale * _sim(z, z)
    log_prob = logits - _masked_logsumexp(logits, others, axis=1)[:, None]
    positives = same2 & others
    return jnp.mean(
      -jnp.sum(jnp.where(positives, log_prob, 0.0), axis=1) / jnp.sum(positives, axis=1)
    )
  logits = scale * _sim(x, y)

  def one_way(logits):
    log_prob = jax.nn.log_softmax(logits, axis=1)
    return -jnp.sum(jnp.where(same, log_prob, 0.0), axis=1) / jnp.sum(same, axis=1)

  return jnp.mean(one_way(logits) + one_way(logits.T)) / 2


def multi_positive_loss(x, y, scale, labels, *, block_size=None):
  """-mean_i log sum_{p in P(i)} softmax_j(l_ij)[p], both directions."""
  same = labels[:, None] == labels[None, :]
  logits = scale * _sim(x, y)

  def one_way(logits):
    return jax.nn.logsumexp(logits, axis=1) - _masked_logsumexp(logits, same, axis=1)

  return jnp.mean(one_way(logits) + one_way(logits.T)) / 2


# ----------------------------------------------------------------------------------------------
# Soft targets: the loss, and the CWCL, M3CoL and distillation targets over all pairs.


def soft_target_loss(
  x, y, scale, side=None, *, targets, space="weights", normalize=True, block_size=None
):
  """-(1/2B) [sum_ij q^x_ij log softmax_j(l_ij) + sum_ij q^y_ij log softmax_i(l_ij)], with the
  target matrix w = targets(all pairs) normalised per row (q^x) and per column (q^y).

  ``targets`` sees every pair of the batch at once, with the fields of a ``TargetTile``.
  """
  n = x.shape[0]
  ids = jnp.arange(n, dtype=jnp.int32)
  logits = scale * _sim(x, y)
  pairs = types.SimpleNamespace(
    row=side,
    col=side,
    row_ids=ids,
    col_ids=ids,
    global_batch=n,
    scale=jnp.asarray(scale, jnp.float32),
    diagonal=jnp.eye(n, dtype=bool),
  )
  w = jnp.broadcast_to(jnp.asarray(targets(pairs), jnp.float32), logits.shape)
  if space == "logits":
    q_x, q_y = jax.nn.softmax(w, axis=1), jax.nn.softmax(w, axis=0)
  elif normalize:
    q_x, q_y = w / jnp.sum(w, axis=1, keepdims=True), w / jnp.sum(w, axis=0, keepdims=True)
  else:
    q_x = q_y = w
  x_to_y = -jnp.sum(q_x * jax.nn.log_softmax(logits, axis=1))
  y_to_x = -jnp.sum(q_y * jax.nn.log_softmax(logits, axis=0))
  return (x_to_y + y_to_x) / (2 * n)


def cwcl_targets(key="frozen"):
  """CWCL: w_ij = (1 + p_i . p_j) / 2, p the frozen modality's embeddings side[key]."""
  return lambda pairs: (1 + _sim(pairs.row[key], pairs.col[key])) / 2


def mixup_targets(lam_key="mix_lambda", partner_key="mix_partner"):
  """M3CoL: w_ij = lam_i [j = i] + (1 - lam_i) [j = pi(i)], lam = side[lam_key],
  pi = side[partner_key]."""

  def targets(pairs):
    lam, partner = pairs.row[lam_key][:, None], pairs.row[partner_key]
    is_partner = jax.nn.one_hot(partner, pairs.global_batch, dtype=bool)
    return lam * pairs.diagonal + (1 - lam) * is_partner

  return targets


def teacher_logits(scale=None, x_key="teacher_x", y_key="teacher_y"):
  """Distillation: target logits t' u_i . v_j, u = side[x_key], v = side[y_key]; t' = sg(t) when
  ``scale`` is None."""

  def targets(pairs):
    t = jax.lax.stop_gradient(pairs.scale) if scale is None else scale
    return t * _sim(pairs.row[x_key], pairs.col[y_key])

  return targets


# ----------------------------------------------------------------------------------------------
# Hard negatives (NegCLIP-style when shared).


def hard_negative_loss(x, y, scale, neg_y, neg_x=None, *, shared=False, block_size=None):
  """Cross-entropy over [batch candidates | hard negatives] columns, in both directions."""
  n = x.shape[0]

  def one_way(anchors, others, negatives):
    columns = [scale * _sim(anchors, others)]
    if negatives is not None:
      if shared:  # every hard negative of the batch is an extra column
        columns.append(scale * _sim(anchors, negatives.reshape(-1, negatives.shape[-1])))
      else:  # anchor i's own negatives only
        columns.append(scale * jnp.einsum("id,ihd->ih", anchors, negatives, precision=_HI))
    log_prob = jax.nn.log_softmax(jnp.concatenate(columns, axis=1), axis=1)
    return -jnp.mean(log_prob[jnp.arange(n), jnp.arange(n)])

  return (one_way(x, y, neg_y) + one_way(y, x, neg_x)) / 2


# ----------------------------------------------------------------------------------------------
# Focal losses (RO-ViT sigmoid focal; softmax focal ITC).


def sigmoid_focal_loss(x, y, scale, bias, *, gamma=1.0, alpha=0.5, block_size=None):
  """-(1/B) sum_ij a_ij (1 - p_ij)^gamma log p_ij, p_ij = sigma(z_ij l_ij)."""
  logits = scale * _sim(x, y) + bias
  eye = jnp.eye(logits.shape[0], dtype=bool)
  p = jax.nn.sigmoid(jnp.where(eye, logits, -logits))
  a = jnp.where(eye, 2 * alpha, 2 * (1 - alpha))
  return -jnp.sum(a * (1 - p) ** gamma * jnp.log(p)) / logits.shape[0]


def softmax_focal_loss(x, y, scale, *, gamma=2.0, block_size=None):
  """-(1/2B) sum_i [(1 - P_i)^gamma log P_i + (1 - P'_i)^gamma log P'_i]."""
  logits = scale * _sim(x, y)
  p_x = jnp.diag(jax.nn.softmax(logits, axis=1))
  p_y = jnp.diag(jax.nn.softmax(logits, axis=0))
  focal = lambda p: -((1 - p) ** gamma) * jnp.log(p)
  return jnp.mean(focal(p_x) + focal(p_y)) / 2


# ----------------------------------------------------------------------------------------------
# MACL (Huang et al., 2023).


def macl_loss(x, y, scale, *, alpha=0.5, a0=0.0, block_size=None):
  """A = sg(mean_i x_i.y_i), tau = (1/t)(1 + alpha (A - a0)), L = -mean sg(1/(1-P_ii)) log P_ii."""
  sim = _sim(x, y)
  a = jax.lax.stop_gradient(jnp.mean(jnp.diag(sim)))
  tau = (1 / scale) * (1 + alpha * (a - a0))

  def one_way(logits):
    p = jnp.diag(jax.nn.softmax(logits, axis=1))
    return -jax.lax.stop_gradient(1 / (1 - p)) * jnp.log(p)

  return jnp.mean(one_way(sim / tau) + one_way(sim.T / tau)) / 2


# ----------------------------------------------------------------------------------------------
# The Mann-Whitney (AUC) loss.


def auc_mw_loss(x, y, scale, *, block_size=None):
  """mean over queries and their negatives of -log sigma(t (s_pos - s_neg)), both directions."""
  sim = _sim(x, y)
  n = sim.shape[0]
  off = _off_diagonal(n)

  def one_way(s):
    bce = jax.nn.softplus(-scale * (jnp.diag(s)[:, None] - s))  # BCE(sigma(t (s_p - s_n)), 1)
    return jnp.sum(jnp.where(off, bce, 0.0)) / (n * (n - 1))

  return (one_way(sim) + one_way(sim.T)) / 2


# ----------------------------------------------------------------------------------------------
# Kernel InfoNCE (Tan et al., 2024).


def kernel_infonce_loss(x, y, scale, *, gamma=2.0, mix_weight=1.0, mixture="sum", block_size=None):
  """InfoNCE on logits -t ||x_i - y_j||^gamma, mixed with the Gaussian kernel (gamma = 2)."""

  def infonce(x, y, gamma):
    dist = jnp.sqrt(_sq_dists(x, y))
    logits = -scale * dist**gamma
    n = logits.shape[0]
    ce = lambda l: -jnp.mean(jax.nn.log_softmax(l, axis=1)[jnp.arange(n), jnp.arange(n)])
    return (ce(logits) + ce(logits.T)) / 2

  if mixture == "concat":
    half = x.shape[1] // 2
    parts = [(x[:, :half], y[:, :half]), (x[:, half:], y[:, half:])]
  else:
    parts = [(x, y), (x, y)]
  loss = 0.0
  for weight, g, (a, b) in zip((mix_weight, 1 - mix_weight), (gamma, 2.0), parts):
    if weight > 0:
      loss += weight * infonce(a, b, g)
  return loss
