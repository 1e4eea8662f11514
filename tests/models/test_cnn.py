"""Tests for contrastive/models/cnn.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive import models
from contrastive import parallel


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


def _init(cnn, images, seed=0):
  return nn.unbox(jax.jit(lambda r: cnn.init(r, images, train=False))(key(seed)))["params"]


def _images(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("pool,dense_in", [("flatten", 4 * 4 * 16), ("gap", 16)])
def test_shapes_dtypes_and_param_names(pool, dense_in):
  cnn = models.CNN(image_size=32, widths=(4, 8, 16), convs_per_stage=2, width=24, pool=pool)
  x = cnn.dummy_input(3)
  assert x.shape == (3, 32, 32, 3) and x.dtype == jnp.float32
  variables = jax.eval_shape(lambda r: cnn.init(r, jnp.zeros(x.shape), train=False), key(0))
  out, aux = jax.eval_shape(lambda v: cnn.apply(v, jnp.zeros(x.shape), train=False), variables)
  assert out.shape == (3, 24) and out.dtype == jnp.float32 and aux == {}
  shapes = {name: p["kernel"].shape for name, p in nn.unbox(variables)["params"].items()}
  assert shapes == {
    "conv_0_0": (3, 3, 3, 4),
    "conv_0_1": (3, 3, 4, 4),
    "conv_1_0": (3, 3, 4, 8),
    "conv_1_1": (3, 3, 8, 8),
    "conv_2_0": (3, 3, 8, 16),
    "conv_2_1": (3, 3, 16, 16),
    "head_dense": (dense_in, 24),
  }
  names = variables["params"]
  assert names["conv_0_0"]["kernel"].names == (None, None, None, None)
  assert names["head_dense"]["kernel"].names == (None, "embed")
  assert names["head_dense"]["bias"].names == ("embed",)


def _reference(params, images, widths, convs_per_stage, pool, space_to_depth=False):
  """The encoder in plain numpy: SAME 3x3 cross-correlations, 2x2 max-pools, then the Dense."""
  gelu = lambda v: np.asarray(jax.nn.gelu(v, approximate=False))
  x = np.asarray(images, np.float64)
  if space_to_depth:  # channel (2 * row + column) * c + k holds pixel (2i + row, 2j + column, k)
    n, h, w, c = x.shape
    x = np.concatenate([x[:, r::2, q::2] for r in range(2) for q in range(2)], axis=-1)
  for i in range(len(widths)):
    for k in range(convs_per_stage):
      kernel = np.asarray(params[f"conv_{i}_{k}"]["kernel"], np.float64)
      bias = np.asarray(params[f"conv_{i}_{k}"]["bias"], np.float64)
      n, h, w, _ = x.shape
      padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      out = np.zeros((n, h, w, kernel.shape[-1])) + bias
      for di in range(3):
        for dj in range(3):
          out += np.einsum("nhwc,co->nhwo", padded[:, di : di + h, dj : dj + w], kernel[di, dj])
      x = gelu(out)
    if i == 0 and space_to_depth:
      continue
    n, h, w, c = x.shape
    x = x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
  x = x.reshape(x.shape[0], -1) if pool == "flatten" else x.mean(axis=(1, 2))
  dense = params["head_dense"]
  return gelu(x @ np.asarray(dense["kernel"], np.float64) + np.asarray(dense["bias"]))


@pytest.mark.parametrize(
  "pool,first_downsample", [("flatten", "pool"), ("gap", "pool"), ("flatten", "space_to_depth")]
)
def test_matches_a_numpy_reference(pool, first_downsample):
  # Rectangular images and two stages of two convolutions: checks the kernel orientation, the
  # stage and convolution order, the pooling, the pixel-to-channel fold and the row-major flatten.
  widths = (2, 3)
  cnn = models.CNN(
    image_size=(4, 8),
    channels=2,
    widths=widths,
    convs_per_stage=2,
    width=5,
    pool=pool,
    first_downsample=first_downsample,
  )
  images = _images((3, 4, 8, 2))
  params = _init(cnn, images)
  params = jax.tree.map(lambda p: p + 0.1 * _images(p.shape, seed=1), params)  # nonzero biases
  out, _ = jax.jit(lambda p, x: cnn.apply({"params": p}, x, train=False))(params, images)
  expected = _reference(params, images, widths, 2, pool, first_downsample == "space_to_depth")
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_flatten_keeps_position_and_gap_does_not():
  # A blob on a zero background, moved by one pooling cell (2 pixels) away from the border: the
  # pooled grid only shifts, so its mean (gap) is unchanged while the flattened grid is not.
  image = np.zeros((1, 8, 8, 3), np.float32)
  image[0, 2:4, 2:4] = [1.0, -0.5, 2.0]
  moved = np.roll(image, 2, axis=2)
  images = np.concatenate([image, moved])
  for pool, same in (("gap", True), ("flatten", False)):
    cnn = models.CNN(image_size=8, widths=(4,), width=6, pool=pool)
    params = _init(cnn, images)
    params["conv_0_0"]["bias"] = 0.1 * _images((4,), seed=2)
    out, _ = cnn.apply({"params": params}, images, train=False)
    assert np.allclose(out[0], out[1], rtol=1e-5, atol=1e-6) == same, pool


def test_bf16_compute_keeps_f32_params():
  images = _images((2, 16, 16, 3))
  f32 = models.CNN(image_size=16, widths=(4, 8), width=16)
  bf16 = f32.clone(dtype="bfloat16")
  variables = jax.jit(lambda r: bf16.init(r, images, train=False))(key(1))
  assert {x.dtype for x in jax.tree.leaves(nn.unbox(variables))} == {jnp.dtype(jnp.float32)}
  out, _ = jax.jit(lambda v, x: bf16.apply(v, x, train=False))(variables, images)
  ref, _ = jax.jit(lambda v, x: f32.apply(v, x, train=False))(variables, images)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, 16)
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=0.05, atol=0.05)


def test_errors():
  with pytest.raises(
    ValueError,
    match=r"CNN image size \(30, 32\) is not divisible by 8 \(2 \*\* "
    r"3, .*widths \(32, 64, 128\)\)",
  ):
    models.CNN(image_size=(30, 32))
  with pytest.raises(
    ValueError,
    match=r"CNN widths must be a non-empty sequence of positive "
    r"ints, got \(\)",
  ):
    models.CNN(widths=())
  with pytest.raises(ValueError, match=r"Unknown CNN pool 'cls'; known: \['flatten', 'gap'\]"):
    models.CNN(pool="cls")
  with pytest.raises(ValueError, match="Unknown CNN first_downsample 'stride'"):
    models.CNN(first_downsample="stride")
  with pytest.raises(ValueError, match="Unknown CNN activation 'relu'"):
    models.CNN(act="relu")
  with pytest.raises(ValueError, match="CNN width must be a positive int, got 0"):
    models.CNN(width=0)
  with pytest.raises(ValueError, match="CNN image_size must be a positive int or"):
    models.CNN(image_size=(32,))
  cnn = models.CNN(image_size=16, widths=(4,))
  for shape in ((2, 16, 16), (2, 16, 16, 1), (2, 32, 32, 3)):
    with pytest.raises(
      ValueError,
      match=r"CNN expects images of shape \[batch, 16, 16, 3\], "
      rf"got \({', '.join(map(str, shape))}\)",
    ):
      jax.eval_shape(lambda r, s=shape: cnn.init(r, jnp.zeros(s), train=False), key(0))


def test_two_tower_model_from_config_on_a_mesh():
  cfg = dict(
    embed_dim=8,
    encoders=dict(
      image=dict(kind="cnn", image_size=16, widths=[4, 8], width=16),
      text=dict(kind="text", variant="mu", vocab_size=64, max_len=8),
    ),
  )
  model = models.make_model(cfg)
  assert isinstance(model.encoders["image"], models.CNN)
  assert model.encoders["image"].widths == (4, 8)
  batch = {
    "image": _images((8, 16, 16, 3)),
    "text": np.random.default_rng(3).integers(1, 64, size=(8, 8)).astype(np.int32),
  }

  def loss_fn(params, batch):
    emb, extras = model.apply({"params": params}, batch, train=True)
    return losses.softmax_loss(emb["image"], emb["text"], extras["scale"])

  init = lambda r: model.init(r, model.dummy_batch(2), train=False)
  mesh = parallel.make_mesh(data=2, fsdp=2, tensor=2)
  variables, shardings = parallel.sharded_init(init, mesh, key(0))
  params = variables["params"]
  assert params["image"]["encoder"]["head_dense"]["kernel"].shape == (4 * 4 * 8, 16)
  batch = {
    k: jax.device_put(v, parallel.logical_sharding(("batch",) + (None,) * (v.ndim - 1), mesh))
    for k, v in batch.items()
  }
  with parallel.use_rules(mesh):
    loss, grads = jax.jit(
      jax.value_and_grad(loss_fn),
      in_shardings=(shardings["params"], None),
      out_shardings=(None, shardings["params"]),
    )(params, batch)
  assert np.isfinite(loss)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.isfinite(g).all() and np.any(g), jax.tree_util.keystr(path)
  ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss_fn))(
    jax.device_get(params), jax.device_get(batch)
  )
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max())))
