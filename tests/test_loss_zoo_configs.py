"""Every loss family of configs/loss_zoo.py trains through the trainer: the runlocal config runs
a few steps on the built-in data over 8 devices, with a finite, non-zero loss."""

import importlib.util
import math
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from contrastive import losses
from contrastive.train import loop

CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "loss_zoo.py"


def _loss_zoo():
  spec = importlib.util.spec_from_file_location("loss_zoo", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ZOO = _loss_zoo()


def test_every_family_names_a_registered_loss():
  assert len(ZOO.FAMILIES) >= 10  # the zoo's families, not an empty table
  for name in ZOO.FAMILIES:
    assert losses.get(name).name == name


def _runlocal(name, steps):
  config = ZOO.get_config(f"loss={name},runlocal")
  config.total_steps = steps
  config.eval.tasks = {}
  config.checkpoint.every_steps = 100
  config.log.every_steps = 1
  return config


# One representative per family besides softmax/sigmoid, which the trainer tests run: the
# decoupled, geometric, focal, temperature, AUC, kernel, hard-negative, n-modal,
# multi-positive, cluster-restricted (mcl) and multi-head (amcl) families (moco: below).
@pytest.mark.parametrize(
  "name",
  [
    "dclw",
    "contrastive_gap",
    "sigmoid_focal",
    "macl",
    "auc_mw",
    "kernel_infonce",
    "hard_negative",
    "gram",
    "gram_itm",  # a second ring term (the volume loss) and a learned bias
    "symile",
    "supcon",
    "mcl",
    "amcl",
    "decoupled_uniformity",  # a loss without a scale over the n-modal convention
  ],
)
def test_family_trains_a_few_steps(name, tmp_path):
  result = loop.train_and_evaluate(_runlocal(name, 3), tmp_path)
  assert math.isfinite(result["train/loss"]), result
  assert result["train/loss"] != 0.0


def _saved_state(workdir, step):
  path = workdir / "checkpoints" / str(step) / "state"
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path)
  tree = getattr(getattr(tree, "item_metadata", tree), "tree", tree)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), tree)
  state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
  return jax.tree.map(np.asarray, state)


def test_moco_trains_and_resumes_with_its_state(tmp_path):
  """2 steps, then a second run resumes (key encoder, queues and pointer restored) for 2 more."""
  first = loop.train_and_evaluate(_runlocal("moco", 2), tmp_path)
  second = loop.train_and_evaluate(_runlocal("moco", 4), tmp_path)
  assert math.isfinite(first["train/loss"]) and math.isfinite(second["train/loss"])
  before, after = _saved_state(tmp_path, 2), _saved_state(tmp_path, 4)
  batch = ZOO.get_config("loss=moco,runlocal").data.batch_size
  assert int(before["loss_state"]["ptr"]) == 2 * batch
  assert int(after["loss_state"]["ptr"]) == 4 * batch  # counted on from the restored pointer
  for m in ("image", "text"):
    queue_2, queue_4 = before["loss_state"]["queues"][m], after["loss_state"]["queues"][m]
    # Rows of the first two steps' keys are kept; the next two steps' keys follow them.
    np.testing.assert_array_equal(queue_4[: 2 * batch], queue_2[: 2 * batch])
    assert not np.array_equal(queue_4[2 * batch : 4 * batch], queue_2[2 * batch : 4 * batch])
    np.testing.assert_array_equal(queue_4[4 * batch :], queue_2[4 * batch :])
    np.testing.assert_allclose(np.linalg.norm(queue_4[: 4 * batch], axis=-1), 1.0, rtol=1e-5)
  online, target = after["params"], after["loss_state"]["params"]
  assert jax.tree.structure(online) == jax.tree.structure(target)
  assert not all(
    np.array_equal(a, b) for a, b in zip(jax.tree.leaves(online), jax.tree.leaves(target))
  )


def test_mochi_trains_a_few_steps(tmp_path):
  """MoCo's state and step, the trainer's rng reaching the mixing."""
  result = loop.train_and_evaluate(_runlocal("mochi", 3), tmp_path)
  assert math.isfinite(result["train/loss"]) and result["train/loss"] != 0.0, result


def test_unknown_family_lists_the_known_ones():
  with pytest.raises(ValueError, match="known: .*dcl"):
    ZOO.get_config("loss=dlc")
