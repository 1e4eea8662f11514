"""Frozen-feature classifiers: an L2-regularized logistic-regression probe and k-NN."""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import optax

from contrastive.evaluate import _common
from contrastive.evaluate import similarity

DEFAULT_L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit(x, labels, l2s, weights, *, num_classes, steps):
  """L-BFGS on the regularized, example-weighted cross-entropy; one model per `(l2, weights)`.

  The models are fitted one after another (`lax.map`): a vmapped L-BFGS batches its line-search
  loops, which doubles the compile time and runs slower.
  """
  onehot = jax.nn.one_hot(labels, num_classes)

  def fit_one(l2, weight):
    def loss(params):
      w, b = params
      ce = optax.softmax_cross_entropy(x @ w + b, onehot)
      return jnp.sum(weight * ce) / jnp.sum(weight) + 0.5 * l2 * jnp.sum(w * w)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)
    params = (jnp.zeros((x.shape[1], num_classes)), jnp.zeros((num_classes,)))

    def step(carry, _):
      params, state = carry
      value, grad = value_and_grad(params, state=state)
      updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)[0][0]

  return jax.lax.map(lambda args: fit_one(*args), (l2s, weights))


def fit_logistic_regression(
  x: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_classes: int,
  l2: float | Sequence[float],
  weights: jax.typing.ArrayLike | None = None,
  steps: int = 100,
) -> tuple[jax.Array, jax.Array]:
  """Multinomial logistic regression with an L2 penalty, fitted by full-batch L-BFGS (optax).

  .. math::
    \\min_{W, b}\\;
      \\frac{\\sum_i a_i \\big(-\\log \\operatorname{softmax}(W^\\top x_i + b)_{y_i}\\big)}
      {\\sum_i a_i} + \\frac{\\lambda}{2}\\lVert W\\rVert_F^2

  Args:
    x: `[num, dim]` features.
    labels: `[num]` integer classes in `[0, num_classes)`.
    num_classes: the number of classes.
    l2: :math:`\\lambda`, or a sequence of them (fitted in one compiled program).
    weights: the example weights :math:`a`: `[num]`, or `[len(l2), num]` (one row per model);
      default 1. A zero weight leaves an example out.
    steps: L-BFGS iterations.

  Returns:
    `(w, b)`: `[dim, num_classes]` and `[num_classes]`, with a leading `[len(l2)]` axis when `l2`
    is a sequence.
  """
  x = jnp.asarray(_common.matrix("x", x), jnp.float32)
  labels = _common.int_vector("labels", labels, length=x.shape[0])
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(
      f"labels must lie in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]."
    )
  single = np.ndim(l2) == 0
  l2s = jnp.atleast_1d(jnp.asarray(l2, jnp.float32))
  weights = np.ones(x.shape[0], np.float32) if weights is None else _common.to_host(weights)
  if weights.shape not in ((x.shape[0],), (len(l2s), x.shape[0])):
    raise ValueError(
      f"weights must have shape {(x.shape[0],)} or {(len(l2s), x.shape[0])}, got {weights.shape}."
    )
  weights = np.broadcast_to(weights.astype(np.float32), (len(l2s), x.shape[0]))
  w, b = _fit(x, labels, l2s, weights, num_classes=int(num_classes), steps=int(steps))
  return (w[0], b[0]) if single else (w, b)


def _accuracy(x, labels, w, b) -> np.ndarray:
  """Accuracy of each of a stack of `[models, dim, classes]` classifiers."""
  pred = np.argmax(np.einsum("nd,mdc->mnc", x, np.asarray(w)) + np.asarray(b)[:, None], axis=-1)
  return np.mean(pred == labels[None], axis=1)


def linear_probe(
  train_x: jax.typing.ArrayLike,
  train_labels: jax.typing.ArrayLike,
  test_x: jax.typing.ArrayLike,
  test_labels: jax.typing.ArrayLike,
  *,
  num_classes: int | None = None,
  l2_grid: Sequence[float] = DEFAULT_L2_GRID,
  val_fraction: float = 0.2,
  steps: int = 100,
  standardize: bool = True,
  seed: int = 0,
) -> dict[str, float]:
  """Linear-probe accuracy, with the L2 strength chosen on a validation split of the train set.

  The train set is split (seeded) into fit and validation parts; one logistic regression per
  value of `l2_grid` is fitted on the fit part (`fit_logistic_regression`), and one on the whole
  train set (all fits in one compiled program, the split done by example weights);
  the value with the best validation accuracy (the strongest among ties) picks the whole-train
  model that is scored on the test set. Features are standardized with the train statistics when
  `standardize`.

  Args:
    train_x: `[num_train, dim]` frozen features.
    train_labels: `[num_train]` integer classes.
    test_x: `[num_test, dim]`.
    test_labels: `[num_test]`.
    num_classes: default: one more than the largest label seen.
    l2_grid: the regularization strengths to try.
    val_fraction: the share of the train set held out for the choice.
    steps: L-BFGS iterations per fit.
    standardize: center and scale each feature by the train statistics.
    seed: for the split.

  Returns:
    `{"accuracy": test accuracy, "val_accuracy": best validation accuracy, "l2": chosen value}`.

  References:
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
    2021, https://arxiv.org/abs/2103.00020 (appendix A.3: logistic regression, L2 chosen on a
    validation split); Kornblith et al., "Do Better ImageNet Models Transfer Better?", CVPR 2019
  """
  train_x, test_x = _common.matrix("train_x", train_x), _common.matrix("test_x", test_x)
  _common.same_dim(train_x=train_x, test_x=test_x)
  train_x, test_x = (_common.to_host(a).astype(np.float32) for a in (train_x, test_x))
  train_labels = _common.int_vector("train_labels", train_labels, length=len(train_x))
  test_labels = _common.int_vector("test_labels", test_labels, length=len(test_x))
  if num_classes is None:
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  if not 0 < val_fraction < 1 or len(train_x) < 2:
    raise ValueError(
      f"val_fraction must be in (0, 1) with at least 2 train examples, got "
      f"{val_fraction} and {len(train_x)}."
    )
  if standardize:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
  order = np.random.default_rng(seed).permutation(len(train_x))
  n_val = min(len(train_x) - 1, max(1, round(val_fraction * len(train_x))))
  val, fit = order[:n_val], order[n_val:]
  grid = np.asarray(sorted(l2_grid), np.float32)
  fit_weight = np.zeros(len(train_x), np.float32)
  fit_weight[fit] = 1.0
  weights = np.concatenate(
    [np.tile(fit_weight, (len(grid), 1)), np.ones((len(grid), len(train_x)), np.float32)]
  )
  w, b = fit_logistic_regression(
    train_x, train_labels, num_classes=num_classes, l2=list(grid) * 2, weights=weights, steps=steps
  )
  w, b = np.asarray(w), np.asarray(b)
  val_acc = _accuracy(train_x[val], train_labels[val], w[: len(grid)], b[: len(grid)])
  best = int(np.flatnonzero(val_acc == val_acc.max())[-1])
  test_acc = _accuracy(test_x, test_labels, w[len(grid) + best :][:1], b[len(grid) + best :][:1])[0]
  return {
    "accuracy": float(test_acc),
    "val_accuracy": float(val_acc[best]),
    "l2": float(grid[best]),
  }


def knn_classifier(
  train_x: jax.typing.ArrayLike,
  train_labels: jax.typing.ArrayLike,
  test_x: jax.typing.ArrayLike,
  test_labels: jax.typing.ArrayLike,
  *,
  k: int = 20,
  weighting: Literal["uniform", "similarity"] = "similarity",
  temperature: float = 0.07,
  num_classes: int | None = None,
  block_size: int = similarity.DEFAULT_BLOCK_SIZE,
  mesh: Mesh | None = None,
) -> dict[str, float]:
  """k-nearest-neighbour accuracy under cosine similarity (the kNN monitor of SSL papers).

  Each test point votes with its `k` most similar train points (blocked top-k, no full matrix):

  .. math::
    \\hat y(x) = \\arg\\max_c \\sum_{j \\in N_k(x)} w_j \\, \\mathbb{1}[y_j = c], \\qquad
    w_j = \\exp(\\cos(x, x_j)/\\tau) \\text{ or } 1

  Args:
    train_x: `[num_train, dim]` features (normalized here).
    train_labels: `[num_train]` integer classes.
    test_x: `[num_test, dim]`.
    test_labels: `[num_test]`.
    k: neighbours per test point (at most `num_train`).
    weighting: `"similarity"` (weights :math:`e^{s/\\tau}`, Wu et al.) or `"uniform"`.
    temperature: :math:`\\tau`.
    num_classes: default: one more than the largest label seen.
    block_size: the largest similarity tile.
    mesh: when given, the test rows are split over its devices.

  Returns:
    `{"accuracy": ...}`.

  References:
    Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR
    2018, https://arxiv.org/abs/1805.01978
  """
  if weighting not in ("uniform", "similarity"):
    raise ValueError(f"Unknown weighting {weighting!r}; known: 'uniform', 'similarity'.")
  train_x, test_x = _common.matrix("train_x", train_x), _common.matrix("test_x", test_x)
  _common.same_dim(train_x=train_x, test_x=test_x)
  train_labels = _common.int_vector("train_labels", train_labels, length=train_x.shape[0])
  test_labels = _common.int_vector("test_labels", test_labels, length=test_x.shape[0])
  if num_classes is None:
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  train_x, test_x = (_common.normalize(_common.to_host(a)) for a in (train_x, test_x))
  scores, idx = similarity.topk(test_x, train_x, k, block_size=block_size, mesh=mesh)
  scores, idx = _common.to_host(scores), _common.to_host(idx)
  weights = (
    np.exp((scores - 1.0) / temperature) if weighting == "similarity" else np.ones_like(scores)
  )
  votes = np.zeros((len(test_x), num_classes))
  np.add.at(votes, (np.arange(len(test_x))[:, None], train_labels[idx]), weights)
  return {"accuracy": float(np.mean(votes.argmax(1) == test_labels))}
