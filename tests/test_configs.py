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
from contrastive.run import config as run_config
from contrastive.train import pretrained
from tests import pretrained_testing as pt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
  if not os.path.basename(p).startswith(("_", "common"))
)
VARIANTS = [
  (name, arg)
  for name in CONFIGS
  for arg in ((None, "runlocal") if name in ("demo", "loss_zoo") else (None, "cpu"))
]
VARIANTS += [("demo", "max_objects=2,shape_variants=2"), ("demo", "image_tower=vit,runlocal")]


def _get(name, arg):
  return runpy.run_path(os.path.join(ROOT, "configs", f"{name}.py"))["get_config"](arg)


def _params(config):
  model = models.make_model(config.model)
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False)
  )
  return model, nn.unbox(variables)["params"]


def test_the_shipped_configs():
  assert {"demo", "clip_vit_b16", "siglip_vit_b16", "lit", "finetune"} <= set(CONFIGS)


@pytest.mark.parametrize("name,arg", VARIANTS)
def test_config_passes_the_startup_checks(name, arg):
  raw = _get(name, arg)
  config = run_config.resolve(raw)
  # Every trainer key is in the file itself, so any of them can be overridden on the command line.
  assert set(run_config.defaults().optim) <= set(raw.optim)
  data_config = data.resolve_config(config.data)
  objective = losses.get(config.loss.name)
  model, params = _params(config)
  assert objective.modalities in (None, len(model.modalities))
  assert (model.bias_init is not None) == objective.uses_bias
  if config.eval.tasks:
    evaluate.check_tasks(config.eval.tasks)
  towers = config.model.encoders
  if "text" in towers:  # configs/symile_xor.py has image towers `a`, `b`, `c` and no text
    assert towers.text.max_len >= data_config.max_len
    if data_config.tokenizer == "bytes":
      assert towers.text.vocab_size >= data.ByteTokenizer.vocab_size
  for name in (
    ("image",) if "image" in towers else data.make_source(data_config, split="train").modalities
  ):
    assert data_config.image_size == towers[name].image_size
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


# Recipes built from an imported checkpoint (tiny, random, saved as its family saves it).


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp("pretrained")
  out = {}
  for family, convention in (("open_clip", "clip"), ("hf", "siglip")):
    path = str(root / f"{family}_{convention}")
    out[convention] = (path, *pt.save_tiny(path, convention=convention, family=family))
  return out


@pytest.mark.parametrize(
  "convention,loss,normalization", [("clip", "softmax", "clip"), ("siglip", "sigmoid", "inception")]
)
def test_finetune_takes_the_checkpoints_model_data_and_loss(
  checkpoints, convention, loss, normalization
):
  path, model_config, _ = checkpoints[convention]
  for arg in (f"pretrained={path}", f"cpu,pretrained={path}"):
    test_config_passes_the_startup_checks("finetune", arg)
    c = _get("finetune", arg)
    assert c.loss.name == loss and c.checkpoint.init_from == path
    assert pretrained.config_differences(c.model, model_config, ("image", "text")) == []
    assert c.model.locked == ()
    assert (c.data.image_size, c.data.max_len, c.data.normalization) == (32, 16, normalization)
  c = _get("finetune", f"pretrained={path}")
  assert c.model.dtype == "bfloat16" and c.data.random_resized_crop
  assert (c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps, c.optim.b2) == (
    1e-5,
    0.1,
    500,
    0.999,
  )  # FLYP's
  assert c.eval.tasks.imagenet.templates == "imagenet80"
  assert c.eval.tasks.retrieval.source.name == "data"
  assert not _get("finetune", f"pretrained={path},imagenet=False,eval_split=").eval.tasks
  assert (c.data.tokenizer == "clip") == (convention == "clip")


def test_finetune_without_a_checkpoint_is_openai_clip_b16():
  _, params = _params(_get("finetune", None))
  assert abs(models.count_params(params) - 149_620_737) < 1_000


def test_lit_locks_the_imported_image_tower(checkpoints):
  path, model_config, _ = checkpoints["clip"]
  for arg in (f"pretrained={path}", f"cpu,pretrained={path}", f"pretrained={path},text=pretrained"):
    test_config_passes_the_startup_checks("lit", arg)
  scratch = _get("lit", f"pretrained={path}")
  assert scratch.model.locked == ("image",) and scratch.checkpoint.init_from == path
  assert scratch.checkpoint.init_from_keys == ("image",)
  assert pretrained.config_differences(scratch.model, model_config, ("image", "text")) == []
  assert scratch.optim.lr == 1e-3  # LiT's, for a text tower from scratch
  assert scratch.eval.tasks.imagenet.class_names == "imagenet"
  both = _get("lit", f"pretrained={path},text=pretrained")
  assert both.checkpoint.init_from_keys == ("image", "text", "log_scale")
  assert both.optim.lr == 1e-5
  siglip = _get("lit", f"pretrained={checkpoints['siglip'][0]},text=pretrained")
  assert siglip.loss.name == "sigmoid"
  assert siglip.checkpoint.init_from_keys == ("image", "text", "log_scale", "bias")
  with pytest.raises(ValueError, match=r"text must be one of \['scratch', 'pretrained'\]"):
    _get("lit", f"pretrained={path},text=frozen")
