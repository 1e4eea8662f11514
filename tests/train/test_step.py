"""The train step: GradCache accumulation equals one big batch, in loss and in every gradient."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive.losses import reference
from contrastive.train import step as step_lib

# Tiny programs compile several times faster without LLVM's optimizations; the comparison does
# not depend on them.
FAST = {"xla_backend_optimization_level": 0}


def _model(convention):
  cfg = models.model_config(
    image="mu/8",
    text="mu",
    image_size=16,
    vocab_size=64,
    max_len=8,
    embed_dim=16,
    convention=convention,
  )
  return models.make_model(cfg)


def _batch(mesh, n=32):
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.normal(size=(n, 16, 16, 3)).astype(np.float32),
    "text": rng.integers(1, 64, size=(n, 8)).astype(np.int32),
    "negatives": rng.integers(1, 64, size=(n, 3, 8)).astype(np.int32),
    "ids": rng.integers(0, 8, size=n).astype(np.int32),
  }  # 32 pairs of 8 ids
  return jax.device_put(batch, parallel.batch_sharding(mesh))


@pytest.mark.parametrize(
  "loss,convention,k,fsdp",
  [
    ("softmax", "clip", 4, 1),
    ("sigmoid", "siglip", 2, 2),
    ("hard_negative", "clip", 2, 1),
    ("supcon", "clip", 2, 1),
  ],
)
def test_gradcache_equals_one_big_batch(loss, convention, k, fsdp):
  """Also with FSDP (params split over `fsdp`, the batch over data x fsdp), with hard
  negatives embedded by the text tower (their gradient reaches it too), and with labels passed
  from the batch as they are."""
  mesh = parallel.make_mesh(data=-1, fsdp=fsdp)  # 8 devices: data x fsdp
  model = _model(convention)
  init = lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False)
  shardings = parallel.logical_shardings(jax.eval_shape(init), mesh)["params"]
  params = jax.jit(
    lambda: nn.unbox(init())["params"], out_shardings=shardings, compiler_options=FAST
  )()
  batch = _batch(mesh)
  objective = losses.get(loss)
  results = {}
  for steps in (1, k):
    side_inputs = ()
    if loss == "hard_negative":
      side_inputs = (step_lib.SideInput("neg_y", "text", "negatives"),)
    if loss == "supcon":
      side_inputs = (step_lib.SideInput("labels", None, "ids"),)
    config = step_lib.StepConfig(
      modalities=("image", "text"), accum_steps=steps, side_inputs=side_inputs
    )
    grad_fn = step_lib.make_grad_fn(model, objective, mesh, config, shardings)
    with parallel.use_rules(mesh):
      results[steps] = jax.jit(grad_fn, compiler_options=FAST)(params, batch, jax.random.key(0))
  (loss_1, (scale_1, _, _)), grads_1 = results[1]
  (loss_k, (scale_k, _, _)), grads_k = results[k]
  np.testing.assert_allclose(loss_k, loss_1, rtol=1e-5)  # accumulation reorders the sums
  np.testing.assert_allclose(scale_k, scale_1, rtol=1e-5)
  flat_1 = jax.tree_util.tree_flatten_with_path(grads_1)[0]
  flat_k = jax.tree.leaves(grads_k)
  largest = max(float(np.max(np.abs(g))) for _, g in flat_1)
  for (path, g1), gk in zip(flat_1, flat_k):
    np.testing.assert_allclose(
      np.asarray(gk),
      np.asarray(g1),
      rtol=1e-4,
      atol=1e-6 * largest,
      err_msg=jax.tree_util.keystr(path),
    )
  assert float(np.abs(grads_1["log_scale"])) > 0  # the scale's gradient arrives once, not k times


def test_micro_batches_take_each_devices_rows_and_rejoin_in_order():
  mesh = parallel.make_mesh()
  x = jax.device_put(
    np.arange(64, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
    parallel.batch_sharding(mesh),
  )
  micro = jax.jit(lambda a: step_lib._micro_split(a, 4, 8, mesh))(x)
  assert micro.shape == (4, 16, 3)
  # Micro-batch 0 holds the first 2 of each device's 8 rows: 0, 1, 8, 9, 16, 17, ...
  np.testing.assert_array_equal(np.asarray(micro[0, :6, 0]), [0, 1, 8, 9, 16, 17])
  back = jax.jit(lambda a: step_lib._micro_join(a, 8, mesh))(micro)
  np.testing.assert_array_equal(np.asarray(back), np.asarray(x))


def test_raw_side_input_reaches_the_loss_as_it_is():
  """`SideInput(side_key, None, batch_key)`: supcon's labels are the batch's ids, unchanged."""
  mesh = parallel.make_mesh()
  model = _model("clip")
  params = nn.unbox(model.init(jax.random.key(0), model.dummy_batch(1), train=False))["params"]
  batch = _batch(mesh)
  config = step_lib.StepConfig(
    modalities=("image", "text"), side_inputs=(step_lib.SideInput("labels", None, "ids"),)
  )
  grad_fn = step_lib.make_grad_fn(model, losses.get("supcon"), mesh, config)
  rng = jax.random.key(0)
  with parallel.use_rules(mesh):
    (loss, (scale, _, _)), _ = jax.jit(grad_fn, compiler_options=FAST)(params, batch, rng)
  emb, _ = model.apply(
    {"params": params}, {m: batch[m] for m in ("image", "text")}, train=True, rngs={"dropout": rng}
  )
  expected = reference.supcon_loss(emb["image"], emb["text"], scale, batch["ids"])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  clip = reference.softmax_loss(emb["image"], emb["text"], scale)
  assert abs(float(loss) - float(clip)) > 1e-3  # the shared ids made positives
