"""The modality-gap tools: centering (its psum on 1, 2, 4 and 8 devices), noise, swapping, the
scale schedule, and the train step that applies them."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive import train
from contrastive.losses import gap_tools
from contrastive.losses import reference
from contrastive.run import config as run_config
from contrastive.train import assemble
from contrastive.train import config as config_lib
from contrastive.train import step as step_lib
from tests.losses import loss_testing as lt

FAST = {"xla_backend_optimization_level": 0}


def _normalize(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_transform(xs, noise, mask, center=True):
  """The tools as the papers write them, on the whole batch."""
  xs = [np.asarray(x, np.float64) for x in xs]
  if center:
    xs = [x - x.mean(0) for x in xs]
  if noise is not None:
    xs = [x + np.asarray(e) for x, e in zip(xs, noise)]
  if mask is not None:
    m = np.asarray(mask)[:, None]
    xs = [np.where(m, xs[1], xs[0]), np.where(m, xs[0], xs[1])]
  return [_normalize(x) for x in xs]


@pytest.mark.parametrize("devices", [1, 2, 4, 8])
def test_center_psum_equals_the_dense_mean(devices):
  mesh = lt.sub_mesh(devices)
  x = lt.unit_rows(0, (24, 8)) + 0.5  # a mean far from 0
  fn = jax.jit(
    jax.shard_map(
      lambda a: gap_tools.center(a, axis_name="data"),
      mesh=mesh,
      in_specs=jax.sharding.PartitionSpec("data"),
      out_specs=jax.sharding.PartitionSpec("data"),
    )
  )
  got = np.asarray(fn(x))
  expected = np.asarray(x) - np.asarray(x).mean(0)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert np.abs(got.mean(0)).max() < 1e-6
  # A per-shard mean would differ: the test can fail.
  if devices > 1:
    local = np.concatenate([s - s.mean(0) for s in np.split(np.asarray(x), devices)])
    assert np.abs(local - expected).max() > 1e-3


@pytest.mark.parametrize("devices", [1, 2, 4, 8])
def test_transform_on_the_mesh_equals_numpy(devices):
  """Center, noise, swap and re-normalize over a mesh equal the numpy transcription with the
  same draws; the draws do not depend on the devices."""
  tools = gap_tools.GapTools(center=True, noise=0.1, swap=0.5)
  x, y = lt.unit_embeddings(1, 24, 8)
  rng = jax.random.key(3)
  fn = jax.jit(gap_tools.make_transform(tools, lt.sub_mesh(devices), ("data",)))
  got = fn([x, y], rng)
  k_noise, k_swap = jax.random.split(rng)
  keys = jax.random.split(k_noise, 2)
  noise = [0.1 * jax.random.normal(k, (24, 8)) for k in keys]
  mask = jax.random.bernoulli(k_swap, 0.5, (24,))
  assert 0 < int(mask.sum()) < 24  # some pairs swapped, some not
  expected = _numpy_transform([x, y], noise, mask)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(np.asarray(g), e, rtol=1e-5, atol=1e-6)
  dense = gap_tools.make_transform(tools)([x, y], rng)  # no mesh: the same values
  for g, d in zip(got, dense):
    np.testing.assert_allclose(np.asarray(g), np.asarray(d), rtol=1e-5, atol=1e-6)


def test_noise_has_the_given_sigma_and_swap_the_given_fraction():
  x, y = lt.unit_embeddings(2, 4096, 16)
  zeros = np.zeros_like(x)
  noisy = gap_tools.make_transform(gap_tools.GapTools(noise=0.2, renormalize=False))(
    [zeros, zeros], jax.random.key(0)
  )
  assert abs(float(np.std(noisy[0])) - 0.2) < 0.005
  assert np.abs(np.asarray(noisy[0]) - np.asarray(noisy[1])).max() > 0.1  # one draw each
  a, b = gap_tools.make_transform(gap_tools.GapTools(swap=0.25, renormalize=False))(
    [x, y], jax.random.key(1)
  )
  swapped = np.all(np.asarray(a) == np.asarray(y), axis=1)
  assert abs(swapped.mean() - 0.25) < 0.03
  np.testing.assert_array_equal(np.asarray(b)[swapped], np.asarray(x)[swapped])
  np.testing.assert_array_equal(np.asarray(a)[~swapped], np.asarray(x)[~swapped])


def test_scale_schedule_values_at_steps():
  lin = gap_tools.ScaleSchedule(0.1, 0.02, steps=100)
  cos = gap_tools.ScaleSchedule(0.1, 0.02, steps=100, kind="cosine")
  for step, tau_lin, tau_cos in [
    (0, 0.1, 0.1),
    (50, 0.06, 0.06),
    (25, 0.08, 0.0882843),
    (100, 0.02, 0.02),
    (500, 0.02, 0.02),
  ]:
    np.testing.assert_allclose(float(lin(step)), 1 / tau_lin, rtol=1e-5)
    np.testing.assert_allclose(float(cos(step)), 1 / tau_cos, rtol=1e-5)


@pytest.mark.parametrize(
  "loss,match",
  [
    ({"embedding_noise": -0.1}, "embedding_noise"),
    ({"swap_fraction": 1.5}, "swap_fraction"),
    ({"scale_schedule": {"start_tau": 0.1}}, "start_tau, end_tau"),
    ({"scale_schedule": {"start_tau": 0.1, "end_tau": 0.0}}, "positive"),
    ({"scale_schedule": {"start_tau": 0.1, "end_tau": 0.1, "kind": "step"}}, "kind"),
  ],
)
def test_bad_options_fail_with_one_line(loss, match):
  with pytest.raises(ValueError, match=match):
    gap_tools.GapTools.from_config(loss, total_steps=10)


def test_from_config_reads_the_loss_keys():
  assert gap_tools.GapTools.from_config({"name": "softmax"}, 10) is None
  tools = gap_tools.GapTools.from_config(
    {"center": True, "embedding_noise": 0.1, "scale_schedule": {"start_tau": 0.1, "end_tau": 0.05}},
    10,
  )
  assert tools.center and tools.noise == 0.1 and tools.swap == 0
  assert tools.scale_schedule == gap_tools.ScaleSchedule(0.1, 0.05, steps=10)
  with pytest.raises(ValueError, match="two modalities"):
    gap_tools.make_transform(gap_tools.GapTools(swap=0.5))(lt.modalities(3), jax.random.key(0))


def _model():
  cfg = models.model_config(
    image="mu/8", text="mu", image_size=16, vocab_size=64, max_len=8, embed_dim=16
  )
  return models.make_model(cfg)


def test_the_step_applies_the_tools_before_the_loss_and_gradcache_agrees():
  """The step's loss is the softmax loss of the transformed embeddings (plain and GradCache)."""
  mesh = parallel.make_mesh()
  model = _model()
  params = nn.unbox(model.init(jax.random.key(0), model.dummy_batch(1), train=False))["params"]
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.normal(size=(32, 16, 16, 3)).astype(np.float32),
    "text": rng.integers(1, 64, size=(32, 8)).astype(np.int32),
  }
  batch = jax.device_put(batch, parallel.batch_sharding(mesh))
  tools = gap_tools.GapTools(center=True, noise=0.05, swap=0.3)
  key = jax.random.key(7)
  values = {}
  for k in (1, 2):
    config = step_lib.StepConfig(modalities=("image", "text"), accum_steps=k, gap_tools=tools)
    grad_fn = step_lib.make_grad_fn(model, losses.get("softmax"), mesh, config)
    with parallel.use_rules(mesh):
      (values[k], (scale, _, _)), _ = jax.jit(grad_fn, compiler_options=FAST)(params, batch, key)
  emb, _ = model.apply({"params": params}, dict(batch), train=True, rngs={"dropout": key})
  x, y = gap_tools.make_transform(tools)(
    [emb["image"], emb["text"]], jax.random.fold_in(key, 0x6A9)
  )
  expected = reference.softmax_loss(x, y, scale)
  np.testing.assert_allclose(values[1], expected, rtol=1e-5)
  np.testing.assert_allclose(values[2], values[1], rtol=1e-5)
  plain = reference.softmax_loss(emb["image"], emb["text"], scale)
  assert abs(float(values[1]) - float(plain)) > 1e-3  # the tools changed the loss


def test_the_step_follows_the_scale_schedule():
  """The loss sees the scheduled scale of each step; the model carries the next one."""
  config = train.get_config(
    "configs/loss_zoo.py:loss=softmax,runlocal",
    {"loss.scale_schedule": {"start_tau": 0.1, "end_tau": 0.05}, "eval.tasks": {}},
  )
  config.total_steps = 4
  config = run_config.resolve(config)
  model = models.make_model(config.model)
  mesh = parallel.make_mesh()
  objective = losses.get("softmax")
  step_config = config_lib.check_run(config, model=model, objective=objective, mesh=mesh)
  state, shardings, tx = assemble.create_train_state(config, model, mesh)
  step = assemble.make_train_step(config, model, objective, tx, mesh, shardings, step_config)
  rng = np.random.default_rng(0)
  cfg = config.model.encoders
  batch = {
    "image": rng.normal(size=(32, 32, 32, 3)).astype(np.float32),
    "text": rng.integers(1, cfg.text.vocab_size, size=(32, cfg.text.max_len)).astype(np.int32),
  }
  batch = jax.device_put(batch, parallel.batch_sharding(mesh))
  for s in range(2):
    state, metrics = step(state, batch)
    np.testing.assert_allclose(float(metrics["scale"]), 1 / (0.1 - 0.05 * s / 4), rtol=1e-5)
    np.testing.assert_allclose(
      float(np.exp(state.params["log_scale"])), 1 / (0.1 - 0.05 * (s + 1) / 4), rtol=1e-5
    )


def test_refused_with_a_momentum_queue_loss():
  with pytest.raises(ValueError, match="do not combine with a momentum-queue loss"):
    step_lib.StepConfig(
      modalities=("image", "text"), momentum=0.99, gap_tools=gap_tools.GapTools(center=True)
    )
