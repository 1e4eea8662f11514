"""Every config file loads, passes every start-up check, and builds its model.

The recipes' models have their published sizes. The CPU versions run for a few steps in
`tests/train/test_loop.py` (clip_vit_b16:cpu in the SIGKILL and NaN tests, siglip_vit_b16:cpu
in the two-process test, lit:cpu in the LiT test, demo in the demo test).
"""

import glob
import os
import runpy

import flax.linen as nn
import jax
import pytest

from contrastive import data
from contrastive import evaluate
from contrastive import losses
from contrastive import models
from contrastive.train import config as train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "common")))
VARIANTS = [(name, arg) for name in CONFIGS
            for arg in ((None, "runlocal") if name in ("demo", "loss_zoo") else (None, "cpu"))]
VARIANTS += [("demo", "max_objects=2,shape_variants=2"), ("demo", "image_tower=vit,runlocal")]


def _get(name, arg):
  return runpy.run_path(os.path.join(ROOT, "configs", f"{name}.py"))["get_config"](arg)


def _params(config):
  model = models.make_model(config.model)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), model.dummy_batch(1),
                                                train=False))
  return model, nn.unbox(variables)["params"]


def test_the_shipped_configs():
  assert {"demo", "clip_vit_b16", "siglip_vit_b16", "lit"} <= set(CONFIGS)


@pytest.mark.parametrize("name,arg", VARIANTS)
def test_config_passes_the_startup_checks(name, arg):
  raw = _get(name, arg)
  config = train_config.resolve(raw)
  # Every trainer key is in the file itself, so any of them can be overridden on the command line.
  assert set(train_config.defaults().optim) <= set(raw.optim)
  data_config = data.resolve_config(config.data)
  objective = losses.get(config.loss.name)
  model, params = _params(config)
  assert objective.modalities in (None, len(model.modalities))
  assert (model.bias_init is not None) == objective.uses_bias
  if config.eval.tasks:
    evaluate.check_tasks(config.eval.tasks)
  text = config.model.encoders.text
  assert text.max_len >= data_config.max_len
  if data_config.tokenizer == "bytes":
    assert text.vocab_size >= data.ByteTokenizer.vocab_size
  assert data_config.image_size == config.model.encoders.image.image_size
  for locked in model.locked:
    assert locked.split("/")[0] in params


def test_recipes_have_the_published_sizes():
  # OpenAI's CLIP ViT-B/16: 149,620,737 parameters (ours lacks the class token's position).
  _, clip = _params(_get("clip_vit_b16", None))
  assert abs(models.count_params(clip) - 149_620_737) < 1_000
  assert 85.5e6 < models.count_params(clip["image"]["encoder"]) < 86.5e6  # ViT-B/16, no head
  # SigLIP B/16 at 224 px is about 203M parameters.
  _, siglip = _params(_get("siglip_vit_b16", None))
  assert abs(models.count_params(siglip) / 203.2e6 - 1) < 0.01
  # The demo is a tiny CLIP.
  _, demo = _params(_get("demo", None))
  assert 0.3e6 < models.count_params(demo) < 2e6


def test_lit_cpu_can_load_the_demos_image_tower():
  _, demo = _params(_get("demo", None))
  _, lit = _params(_get("lit", "cpu"))
  shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)
  assert shapes(lit["image"]) == shapes(demo["image"])


def test_demo_image_towers_object_weights_and_contrast_pairs():
  assert _get("demo", None).model.encoders.image.kind == "cnn"
  assert _get("demo", "image_tower=vit").model.encoders.image.kind == "vit"
  with pytest.raises(ValueError, match=r"image_tower must be one of \['cnn', 'vit'\], got 'rn50'"):
    _get("demo", "image_tower=rn50")
  assert _get("demo", None).data.synthetic.object_weights == (4, 1, 1)
  assert _get("demo", None).data.synthetic.shape_variants == 2  # contrast pairs
  assert _get("demo", "max_objects=2,one_object_weight=2").data.synthetic.object_weights == (2, 1)


def test_demo_object_count_and_contrast_sets_reach_training_and_test_pairs():
  config = _get("demo", "max_objects=1,shape_variants=2")
  config.data.update(batch_size=8, image_size=32)
  batch = next(data.make_pipeline(config.data, split="train"))
  assert (batch["num_objects"] == 1).all()
  assert sorted(batch["index"] // 2) == sorted(list(set(batch["index"] // 2)) * 2)  # pairs
  test_tasks = [t for t in config.eval.tasks.values() if t.source.split == "test"]
  assert test_tasks and all(t.source.max_objects == 1 for t in test_tasks)
