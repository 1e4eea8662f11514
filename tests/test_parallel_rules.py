"""Tests for the logical axis rules of contrastive/parallel.py, on 8 simulated devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from contrastive import models
from contrastive import parallel


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


@pytest.mark.parametrize(
  "names,spec",
  [
    (("batch", "length", "embed"), P(("data", "fsdp"), None, None)),  # activations: batch only
    (("batch", "length", "mlp"), P(("data", "fsdp"), None, "tensor")),
    (("batch", "length", "heads", "kv"), P(("data", "fsdp"), None, "tensor", None)),
    (("embed", "mlp"), P("fsdp", "tensor")),  # parameters
    (("mlp", "embed"), P("tensor", "fsdp")),
    (("embed", "heads", "kv"), P("fsdp", "tensor", None)),
    (("vocab", "embed"), P("tensor", "fsdp")),
    (("layers", "embed", "joint"), P(None, "fsdp", None)),
    ((None, None, "embed"), P(None, None, "fsdp")),
  ],
)
def test_rules(names, spec):
  assert parallel.logical_spec(names) == spec


def test_logical_sharding_for_inputs():
  mesh = parallel.make_mesh(data=2, fsdp=4)
  sharding = parallel.logical_sharding(("batch", None), mesh)
  assert sharding.spec == P(("data", "fsdp"), None) and sharding.mesh is mesh


@pytest.fixture(scope="module")
def setup():
  cfg = models.model_config(
    image="mu/8", text="mu", image_size=16, vocab_size=64, max_len=8, embed_dim=16
  )
  cfg.scan = True
  model = models.make_model(cfg)
  batch = {
    "image": np.random.default_rng(1).normal(size=(8, 16, 16, 3)).astype(np.float32),
    "text": np.random.default_rng(2).integers(1, 64, size=(8, 8)).astype(np.int32),
  }
  init = lambda r: model.init(r, model.dummy_batch(2), train=False)

  def fn(params, batch):
    def loss(p):
      emb, extras = model.apply({"params": p}, batch, train=False)
      return extras["scale"] * jnp.sum(emb["image"] * emb["text"]), emb

    (_, emb), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return emb, grads

  params = nn.unbox(jax.jit(init)(key(0)))["params"]
  reference = jax.jit(fn)(params, batch)
  return model, init, fn, batch, reference


def test_param_shardings_follow_the_rules(setup):
  model, init, *_ = setup
  mesh = parallel.make_mesh(data=2, fsdp=2, tensor=2)
  shardings = parallel.logical_shardings(jax.eval_shape(init, key(0)), mesh)
  block = shardings["params"]["text"]["encoder"]["transformer"]["encoderblock"]
  assert block["mlp"]["fc1"]["kernel"].spec == P(None, "fsdp", "tensor")
  assert block["attn"]["out"]["kernel"].spec == P(None, "tensor", None, "fsdp")
  assert shardings["params"]["text"]["encoder"]["embedding"]["embedding"].spec == P(
    "tensor", "fsdp"
  )
  assert shardings["params"]["log_scale"].spec == P()
  assert all(isinstance(s, jax.sharding.NamedSharding) for s in jax.tree.leaves(shardings))


@pytest.mark.parametrize("axes", [dict(data=2, fsdp=4), dict(data=4, tensor=2)])
def test_sharded_apply_equals_unsharded(setup, axes):
  model, init, fn, batch, (ref_emb, ref_grads) = setup
  mesh = parallel.make_mesh(**axes)
  variables, shardings = parallel.sharded_init(init, mesh, key(0))
  params = variables["params"]
  kernel = params["image"]["encoder"]["transformer"]["encoderblock"]["mlp"]["fc1"]["kernel"]
  assert kernel.shape == (1, 32, 128)
  split = 4 if "fsdp" in axes else 2  # over fsdp (embed) or tensor (mlp)
  assert kernel.addressable_shards[0].data.size == kernel.size // split
  batch = {
    k: jax.device_put(v, parallel.logical_sharding(("batch",) + (None,) * (v.ndim - 1), mesh))
    for k, v in batch.items()
  }
  with parallel.use_rules(mesh):
    emb, grads = jax.jit(
      fn, in_shardings=(shardings["params"], None), out_shardings=(None, shardings["params"])
    )(params, batch)
  for name in ("image", "text"):
    np.testing.assert_allclose(emb[name], ref_emb[name], rtol=1e-5, atol=1e-5)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
    # Sharded matmuls sum in another order: compare relative to the gradient's magnitude.
    tol = 1e-5 * max(1.0, float(jnp.abs(b).max()))
    assert float(jnp.abs(a - b).max()) <= tol, jax.tree_util.keystr(path)


def test_indivisible_dimensions_stay_whole():
  # Ti has 3 heads: over tensor=2 the heads dimension cannot be split and stays whole.
  text = models.TextTransformer("Ti", depth=1, vocab_size=64, max_len=8)
  abstract = jax.eval_shape(
    lambda r: text.init(r, jnp.zeros((1, 8), jnp.int32), train=False), key(0)
  )
  mesh = parallel.make_mesh(data=4, tensor=2)
  shardings = parallel.logical_shardings(abstract, mesh)
  attn = shardings["params"]["transformer"]["encoderblock_0"]["attn"]
  assert attn["query"]["kernel"].spec == P("fsdp", None, None)
  assert shardings["params"]["transformer"]["encoderblock_0"]["mlp"]["fc1"]["kernel"].spec == P(
    "fsdp", "tensor"
  )


def test_activation_constraints_only_inside_use_rules(setup):
  model, init, fn, batch, _ = setup
  params = nn.unbox(jax.eval_shape(init, key(0)))["params"]
  count = lambda: jax.jit(fn).lower(params, batch).as_text().count("sharding_constraint")
  assert count() == 0
  mesh = parallel.make_mesh(data=4, tensor=2)
  with parallel.use_rules(mesh):
    assert count() > 10
