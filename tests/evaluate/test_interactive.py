"""The notebook helpers: examples by field, figures, tables, the Embedder's zero-shot answers."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import data
from contrastive import evaluate
from contrastive.evaluate import zeroshot
from tests.evaluate import conftest


class TableModel(nn.Module):
  """Embeds each id with the fake table of conftest; a fixed logit scale of 10."""

  @nn.compact
  def __call__(self, batch, *, train):
    del train
    scale = self.param("log_scale", lambda _: jnp.log(10.0))
    embeddings = conftest.embed_fn(batch)
    return embeddings, {"scale": jnp.exp(scale), "bias": None}


def _embedder():
  model = TableModel()
  params = model.init(jax.random.key(0), {}, train=False)["params"]
  return evaluate.Embedder(model, params, conftest.prepare)


def test_examples_by_field_stacks_arrays_and_lists_the_rest():
  source = data.make_source(data.default_config(), split="train")
  got = evaluate.examples_by_field(source, 3, start=2)
  assert got["image"].shape == (3, 64, 64, 3) and got["image"].dtype == np.uint8
  assert got["caption"] == [source[i]["caption"] for i in (2, 3, 4)]
  with pytest.raises(ValueError, match="Records 0..9 asked of a source of 5"):
    evaluate.examples_by_field([{"a": 1}] * 5, 10)


def test_image_grid_draws_each_image_with_its_title():
  images = np.zeros((5, 8, 8, 3), np.uint8)
  fig = evaluate.image_grid(images, [f"caption {i}" for i in range(5)], columns=4)
  titled = [ax.get_title() for ax in fig.axes if ax.images]
  assert titled == [f"caption {i}" for i in range(5)] and len(fig.axes) == 8
  with pytest.raises(ValueError, match="2 titles for 5 images"):
    evaluate.image_grid(images, ["a", "b"])
  with pytest.raises(ValueError, match=r"\[n, H, W, C\].*\(8, 8, 3\)"):
    evaluate.image_grid(images[0])


@pytest.mark.parametrize("ensemble", ["mean", "marginal"])
def test_zeroshot_predicts_each_image_its_own_class(ensemble):
  emb = _embedder()
  images = [conftest.image_of(i) for i in (3, 1, 2, 0)]
  names, templates = ["c0", "c1", "c2", "c3"], ["{}", "a {}"]
  pred, probs = emb.zeroshot(images, names, templates, ensemble=ensemble)
  np.testing.assert_array_equal(pred, [3, 1, 2, 0])
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
  # The mean ensemble is a softmax over scaled cosines with the normalized class means.
  if ensemble == "mean":
    w = conftest.TABLE[[0, 0, 1, 1, 2, 2, 3, 3]].reshape(4, 2, -1)
    logits = 10.0 * conftest.TABLE[[3, 1, 2, 0]] @ zeroshot.class_prototypes(w).T
    want = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="ensemble must be"):
    emb.zeroshot(images, names, templates, ensemble="max")


def test_embedder_scale_and_embeddings():
  emb = _embedder()
  assert emb.scale == pytest.approx(10.0, rel=1e-5)
  np.testing.assert_allclose(emb.embed("text", ["c7"]), conftest.TABLE[[7]], rtol=1e-6)


def test_metrics_table_renders_runs_side_by_side():
  runs = {"softmax": {"acc": 0.5, "loss": 1.25}, "dcl": {"acc": 0.75}}
  table = evaluate.metrics_table(runs)
  assert table.markdown().splitlines() == [
    "| metric | softmax | dcl |",
    "|---|---|---|",
    "| acc | 0.500 | 0.750 |",
    "| loss | 1.250 |  |",
  ]
  assert "<td>0.750</td>" in table._repr_html_()
  assert evaluate.metrics_table({"acc": 0.5}).header == ["metric", "value"]
  with pytest.raises(KeyError, match="top5"):
    evaluate.metrics_table(runs, keys=["top5"])


def test_plot_comparison_has_a_bar_per_run_and_metric():
  fig = evaluate.plot_comparison({"a": {"x": 1.0, "y": 2.0}, "b": {"x": 3.0, "y": 4.0}}, ["x", "y"])
  heights = sorted(p.get_height() for p in fig.axes[0].patches)
  assert heights == [1.0, 2.0, 3.0, 4.0]
  with pytest.raises(KeyError, match="'b': \\['y'\\]"):
    evaluate.plot_comparison({"a": {"y": 1.0}, "b": {"x": 1.0}}, ["y"])


def test_report_images_finds_the_pngs_or_says_why_not(tmp_path):
  with pytest.raises(FileNotFoundError, match="No report PNGs"):
    evaluate.report_images(tmp_path)
  (tmp_path / "eval").mkdir()
  for name in ("spectrum.png", "pca.png"):
    (tmp_path / "eval" / name).write_bytes(b"png")
  assert [p.rsplit("/", 1)[1] for p in evaluate.report_images(tmp_path)] == [
    "pca.png",
    "spectrum.png",
  ]


def test_embedder_from_a_pretrained_checkpoint_uses_its_input_settings():
  from contrastive import models

  path = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "models", "pretrained", "fixtures", "open_clip_clip"
  )
  pre = models.load_pretrained(path)
  emb = evaluate.Embedder.from_pretrained(pre)
  images = np.random.default_rng(0).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
  x = emb.embed("image", list(images))
  assert x.shape == (3, pre.model_config.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
  assert emb.scale == pytest.approx(float(np.exp(pre.params["log_scale"])), rel=1e-6)
