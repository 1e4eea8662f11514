"""Tests for contrastive/train/param_groups.py and the optimizer's groups, cooldown and optimizers.

Layer-wise decay against a hand-computed table per parameter path (unrolled and scanned); regex
multipliers (first match wins, None/0 freeze, a pattern matching nothing is a warning naming it);
a frozen group does not move after Adam steps with weight decay on; weight-decay multipliers
against the AdamW formula; open_clip's unlocked groups; cooldown values; every optimizer of the
table steps a tiny model with the groups on.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from contrastive import models
from contrastive.models import locking
from contrastive.run import config as run_config
from contrastive.train import optimizer
from contrastive.train import param_groups

D = 0.5  # the layer decay of the tests


def _optim(**kw):
  c = run_config.defaults().optim
  with c.ignore_type():
    for k, v in kw.items():
      c[k] = v
  return c


def _params(scan=False, depth=3):
  cfg = models.model_config(
    image="mu/8", text="mu", image_size=16, vocab_size=40, max_len=8, embed_dim=8
  )
  cfg.encoders.image.update(depth=depth, pool="cls", pre_norm=True)
  cfg.encoders.text.update(depth=2)
  cfg.scan = scan
  model = models.make_model(cfg)
  variables = model.init(jax.random.key(0), model.dummy_batch(2), train=False)
  return jax.tree.map(np.asarray, nn_unbox(variables)["params"])


def nn_unbox(tree):
  import flax.linen as nn

  return nn.meta.unbox(tree)


def _flat(tree):
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
  return {locking._path(p): v for p, v in leaves}


def test_tower_depths():
  assert param_groups.tower_depths(_params()) == {"image": 3, "text": 2}
  assert param_groups.tower_depths(_params(scan=True)) == {"image": 3, "text": 2}


def test_layer_decay_table_by_path():
  mults = _flat(param_groups.layer_decay_multipliers(_params(), {"image": D}))
  # image: L = 3; embeddings D^4, block i D^(3 - i), final norm and head 1.
  want = {
    "image/encoder/embedding/kernel": D**4,
    "image/encoder/pos_embedding": D**4,
    "image/encoder/cls": D**4,
    "image/encoder/norm_pre/scale": D**4,
    "image/encoder/transformer/encoderblock_0/attn/query/kernel": D**3,
    "image/encoder/transformer/encoderblock_1/mlp/fc1/bias": D**2,
    "image/encoder/transformer/encoderblock_2/norm1/scale": D**1,
    "image/encoder/norm/scale": 1.0,
    "image/head/kernel": 1.0,
    "text/encoder/embedding/embedding": 1.0,  # no decay for the text tower here
    "log_scale": 1.0,
  }
  for path, value in want.items():
    assert mults[path] == pytest.approx(value), path
  both = _flat(param_groups.layer_decay_multipliers(_params(), D))
  assert both["text/encoder/embedding/embedding"] == pytest.approx(D**3)  # L = 2
  assert both["text/encoder/transformer/encoderblock_1/attn/out/kernel"] == pytest.approx(D)
  assert both["text/head/kernel"] == 1.0


def test_layer_decay_of_scanned_blocks_is_an_array():
  mults = _flat(param_groups.layer_decay_multipliers(_params(scan=True), {"image": D}))
  m = mults["image/encoder/transformer/encoderblock/attn/query/kernel"]
  assert m.shape == (3, 1, 1, 1)
  np.testing.assert_allclose(m.ravel(), [D**3, D**2, D**1])
  assert mults["image/encoder/pos_embedding"] == pytest.approx(D**4)


def test_patterns_first_match_wins_and_none_freezes(caplog):
  params = _params()
  patterns = [("image/head/.*", 10.0), ("image/.*", None), (".*/bias", 0.5), ("nothing/.*", 2.0)]
  with caplog.at_level(logging.WARNING):
    mults = _flat(param_groups.pattern_multipliers(params, patterns))
  assert "'nothing/.*' matches no parameter" in caplog.text
  assert mults["image/head/kernel"] == 10.0
  assert mults["image/encoder/embedding/kernel"] is None
  assert mults["image/encoder/embedding/bias"] is None  # the image rule came first
  assert mults["text/encoder/norm/bias"] == 0.5
  assert mults["text/encoder/norm/scale"] == 1.0


@pytest.mark.parametrize(
  "kw,match",
  [
    (dict(layer_decay=1.5), r"optim.layer_decay must be a number in \(0, 1\], got 1.5"),
    (
      dict(layer_decay={"image": 0.0}),
      r"optim.layer_decay for 'image' must be a number in \(0, 1\]",
    ),
    (dict(layer_decay={"audio": 0.5}), "names 'audio', which is not a tower"),
    (dict(lr_mults=[("image/.*", -1.0)]), "multiplier for 'image/.\\*' must be a number >= 0"),
    (dict(wd_mults=[("(", 1.0)]), "pattern '\\(' is not a regular expression"),
    (dict(lr_mults=["image"]), "entries are \\(regex, multiplier\\) pairs"),
    (dict(unlocked_groups={"image": 9}), r"unlocked_groups\['image'\] must be an int in \[0, 5\]"),
  ],
)
def test_bad_input_is_one_line(kw, match):
  with pytest.raises(ValueError, match=match) as info:
    param_groups.make_param_groups(_optim(**kw), _params())
  assert "\n" not in str(info.value)


def _steps(tx, params, n=3, seed=0):
  state = tx.init(params)
  rng = np.random.default_rng(seed)
  for _ in range(n):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_frozen_group_does_not_move_with_adam_and_weight_decay():
  params = _params()
  optim = _optim(
    lr=0.1, weight_decay=0.5, schedule="constant", lr_mults=[("image/encoder/.*", 0.0)]
  )
  tx, _ = optimizer.make_optimizer(optim, params, total_steps=10)
  after = _steps(tx, params)
  for path, leaf in _flat(after).items():
    before = _flat(params)[path]
    if path.startswith("image/encoder/"):
      np.testing.assert_array_equal(leaf, before, err_msg=path)
    else:
      assert not np.array_equal(leaf, before), path
  state = tx.init(params)  # frozen leaves hold no Adam moments
  sizes = sum(x.size for x in jax.tree.leaves(state))
  free = sum(v.size for k, v in _flat(params).items() if not k.startswith("image/encoder/"))
  assert sizes < 3 * free


def test_multipliers_scale_adamw_updates_exactly():
  # One AdamW step: update = -lr * m_lr * (g / (|g| + eps) + wd * m_wd * p) elementwise.
  params = _params()
  optim = _optim(
    lr=0.1,
    weight_decay=0.2,
    schedule="constant",
    eps=1e-8,
    layer_decay={"image": D},
    lr_mults=[("text/head/.*", 3.0)],
    wd_mults=[("image/head/.*", 0.0), ("text/.*", 2.0)],
  )
  tx, _ = optimizer.make_optimizer(optim, params, total_steps=10)
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.5, p.dtype), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  updates, flat = _flat(updates), _flat(params)
  decays = _flat(models.weight_decay_mask(params))

  def want(path, m_lr, m_wd):
    adam = 0.5 / (0.5 + 1e-8)
    wd = 0.2 * m_wd * flat[path] if decays[path] else 0.0
    return -0.1 * m_lr * (adam + wd)

  cases = {
    "image/encoder/transformer/encoderblock_0/mlp/fc1/kernel": (D**3, 1.0),
    "image/encoder/pos_embedding": (D**4, 1.0),
    "image/head/kernel": (1.0, 0.0),
    "text/head/kernel": (3.0, 2.0),
    "text/encoder/embedding/embedding": (1.0, 2.0),
    "log_scale": (1.0, 1.0),
  }
  for path, (m_lr, m_wd) in cases.items():
    np.testing.assert_allclose(updates[path], want(path, m_lr, m_wd), rtol=1e-5, err_msg=path)


def test_unlocked_groups_follow_open_clip():
  params = _params()
  groups = locking.tower_groups(params, "image")
  assert len(groups) == 3 + 2
  assert groups[-1] == ["image/head"]
  assert groups[-2] == ["image/encoder/transformer/encoderblock_2", "image/encoder/norm"]
  assert groups[0] == [
    "image/encoder/cls",
    "image/encoder/embedding",
    "image/encoder/norm_pre",
    "image/encoder/pos_embedding",
  ]
  frozen = _flat(
    param_groups.make_param_groups(_optim(unlocked_groups={"image": 2}), params).frozen
  )
  assert not frozen["image/head/kernel"]
  assert not frozen["image/encoder/norm/scale"]
  assert not frozen["image/encoder/transformer/encoderblock_2/mlp/fc1/kernel"]
  assert frozen["image/encoder/transformer/encoderblock_1/mlp/fc1/kernel"]
  assert frozen["image/encoder/pos_embedding"]
  assert not frozen["text/head/kernel"]
  with pytest.raises(ValueError, match="its blocks are scanned"):
    locking.tower_groups(_params(scan=True), "image")
  with pytest.raises(ValueError, match="model.locked locks whole"):
    optimizer.make_optimizer(
      _optim(unlocked_groups={"image": 2}), params, total_steps=4, locked=("image",)
    )


def test_describe_lists_groups():
  params = _params()
  optim = _optim(layer_decay={"image": D}, lr_mults=[("text/.*", None)])
  groups = param_groups.make_param_groups(optim, params)
  lines = param_groups.describe(groups, params)
  text = "\n".join(lines)
  assert "image/encoder/transformer/encoderblock_0/*" in text
  assert "0.125" in text and "frozen" in text
  total = sum(int(line.split()[-3].replace(",", "")) for line in lines[1:])
  assert total == models.count_params(params)


@pytest.mark.parametrize("shape", ["linear", "sqrt"])
def test_cooldown_values(shape):
  optim = _optim(lr=2.0, schedule="constant", warmup_steps=2, cooldown_steps=4, cooldown=shape)
  schedule = optimizer.learning_rate_schedule(optim, total_steps=10)
  values = np.array([float(schedule(t)) for t in range(11)])
  f = (lambda x: 1 - x) if shape == "linear" else (lambda x: 1 - np.sqrt(x))
  # Updates 0-1 warm up, 2-5 at lr, 6-9 the cooldown from f(0) = 1, update 10 would use 0.
  want = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0] + [2.0 * f(k / 4) for k in range(4)] + [0.0]
  np.testing.assert_allclose(values, want, rtol=1e-6, atol=1e-7)


def test_cooldown_freezes_the_schedule_where_it_starts():
  optim = _optim(lr=1.0, schedule="linear", end_lr=0.0, cooldown_steps=5, cooldown="linear")
  base = optimizer.learning_rate_schedule(_optim(lr=1.0, schedule="linear"), total_steps=20)
  schedule = optimizer.learning_rate_schedule(optim, total_steps=20)
  np.testing.assert_allclose(float(schedule(10)), float(base(10)), rtol=1e-6)
  np.testing.assert_allclose(float(schedule(17)), float(base(15)) * (1 - 2 / 5), rtol=1e-6)


def test_bad_cooldown_is_named():
  with pytest.raises(ValueError, match="Unknown optim.cooldown 'cosine'"):
    optimizer.learning_rate_schedule(_optim(cooldown_steps=2, cooldown="cosine"), total_steps=5)
  with pytest.raises(ValueError, match=r"cooldown_steps must be in \[0, total_steps=5\]"):
    optimizer.learning_rate_schedule(_optim(cooldown_steps=6), total_steps=5)


@pytest.mark.parametrize("name", sorted(optimizer.OPTIMIZERS))
def test_every_optimizer_steps_with_groups_and_freezing(name):
  params = _params()
  optim = _optim(
    name=name,
    lr=1e-2,
    weight_decay=0.1,
    schedule="constant",
    layer_decay=0.8,
    lr_mults=[("image/encoder/embedding/.*", None)],
    wd_mults=[("text/.*", 0.0)],
  )
  tx, _ = optimizer.make_optimizer(optim, params, total_steps=10)
  after = jax.jit(lambda p: _steps(tx, p, n=2))(params)
  flat_after, flat = _flat(after), _flat(params)
  for path in flat:
    assert np.all(np.isfinite(flat_after[path])), path
    if path.startswith("image/encoder/embedding/"):
      np.testing.assert_array_equal(flat_after[path], flat[path])
  moved = flat_after["image/encoder/transformer/encoderblock_0/mlp/fc1/kernel"]
  assert not np.array_equal(moved, flat["image/encoder/transformer/encoderblock_0/mlp/fc1/kernel"])


@pytest.mark.parametrize("name", ["adafactor", "lion", "muon"])
def test_new_optimizers_keep_locking(name):
  params = _params()
  tx, _ = optimizer.make_optimizer(
    _optim(name=name, lr=1e-2, weight_decay=0.1), params, total_steps=4, locked=("text",)
  )
  after = _steps(tx, params, n=2)
  for path, leaf in _flat(after).items():
    if path.startswith("text/"):
      np.testing.assert_array_equal(leaf, _flat(params)[path])


def test_a_short_run_with_groups_cooldown_and_patch_dropout(tmp_path, caplog):
  from contrastive import train
  from tests.train import trainer_testing as tt

  config = train.get_config(
    "configs/clip_vit_b16.py:cpu",
    {
      "total_steps": 2,
      "eval.tasks": {},
      "checkpoint.every_steps": 1,
      "optim.layer_decay": 0.8,
      "optim.lr_mults": (("image/encoder/embedding/.*", None),),
      "optim.wd_mults": (("text/.*", 0.5),),
      "optim.weight_decay": 0.1,
      "optim.cooldown_steps": 1,
    },
  )
  config.model.encoders.image.patch_dropout = 0.5  # not a key of the recipe's model config
  with caplog.at_level(logging.INFO):
    metrics = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics["train/loss"])
  assert "Parameter groups" in caplog.text and "frozen" in caplog.text
  first, second = (tt.load_state(str(tmp_path), step)["params"] for step in (1, 2))
  np.testing.assert_array_equal(  # frozen by lr_mults
    first["image"]["encoder"]["embedding"]["kernel"],
    second["image"]["encoder"]["embedding"]["kernel"],
  )
  assert not np.array_equal(first["image"]["head"]["kernel"], second["image"]["head"]["kernel"])
