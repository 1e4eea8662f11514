"""Tests for contrastive/models/pretrained/resize.py: position tables at another size.

The formulas are checked against hand-computed rows, against torch.nn.functional.interpolate
(outputs committed in fixtures/resize_torch.npz by make_resize_fixture.py, torch 2.13 CPU) and
against scipy.ndimage.zoom, on non-square grids, up and down; `load_pretrained(image_size=,
max_len=)` against open_clip's own resizing of the committed open_clip fixture.
"""

import os

import jax
import numpy as np
import pytest
import scipy.ndimage

from contrastive import models
from contrastive.models.pretrained import resize
from tests import pretrained_testing as pt

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TORCH = os.path.join(FIXTURES, "resize_torch.npz")
CLIP = os.path.join(FIXTURES, "open_clip_clip")
HF_CLIP = os.path.join(FIXTURES, "hf_clip")
BIG_VISION = os.path.join(FIXTURES, "big_vision_siglip", "siglip_tiny.npz")


@pytest.fixture(scope="module")
def torch_outputs():
  return dict(np.load(TORCH))


def test_rows_sum_to_one_for_every_method():
  for method in resize.METHODS:
    for n_in, n_out in ((5, 9), (9, 5), (7, 7), (16, 3)):
      w = resize.resize_weights(n_in, n_out, method=method)
      assert w.shape == (n_out, n_in)
      np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)


def test_same_size_is_the_identity():
  for method in resize.METHODS:
    np.testing.assert_allclose(resize.resize_weights(6, 6, method=method), np.eye(6), atol=1e-12)


def test_linear_by_hand():
  # torch linear, align_corners=False, 2 -> 4: src = max(0.5 (dst + 0.5) - 0.5, 0).
  want = [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]
  np.testing.assert_allclose(resize.resize_weights(2, 4, method="linear"), want)
  # 4 -> 2: src = 2 (dst + 0.5) - 0.5 = 0.5, 2.5.
  want = [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]
  np.testing.assert_allclose(resize.resize_weights(4, 2, method="linear"), want)


def test_zoom_linear_by_hand():
  # corners aligned, 2 -> 3: the midpoint in between.
  np.testing.assert_allclose(
    resize.resize_weights(2, 3, method="zoom_linear"), [[1, 0], [0.5, 0.5], [0, 1]]
  )


def test_bicubic_antialias_downsampling_by_hand():
  # 4 -> 2: scale 2, support 4, taps 0..3 of output 0 at x = (j - 1 + 0.5) / 2 = -1/4, 1/4, 3/4,
  # 5/4; Keys' a = -0.5: k(1/4) = 0.8671875, k(3/4) = 0.2265625, k(5/4) = -0.0703125.
  taps = np.array([0.8671875, 0.8671875, 0.2265625, -0.0703125])
  w = resize.resize_weights(4, 2, method="bicubic_antialias")
  np.testing.assert_allclose(w[0], taps / taps.sum(), rtol=1e-12)
  np.testing.assert_allclose(w[1], (taps / taps.sum())[::-1], rtol=1e-12)


def test_bicubic_upsampling_by_hand():
  # 2 -> 4, a = -0.75: output 1 has src = 0.25; taps -1, 0, 1, 2 (clamped to 0, 0, 1, 1) with
  # weights k(1.25), k(0.25), k(0.75), k(1.75).
  a = -0.75

  def k(x):
    x = abs(x)
    if x < 1:
      return ((a + 2) * x - (a + 3)) * x * x + 1
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  w = resize.resize_weights(2, 4, method="bicubic")
  np.testing.assert_allclose(w[1], [k(1.25) + k(0.25), k(0.75) + k(1.75)], rtol=1e-12)


@pytest.mark.parametrize(
  "case",
  [
    "bicubic_antialias_up",
    "bicubic_antialias_down",
    "bicubic_antialias_mixed",
    "bicubic_up",
    "bicubic_down",
  ],
)
def test_grid_equals_torch_interpolate(torch_outputs, case):
  x, y = torch_outputs[f"{case}/x"], torch_outputs[f"{case}/y"]
  method = case.rsplit("_", 1)[0]
  got = resize.resize_grid(x, y.shape[:2], method=method)
  assert got.shape == y.shape and got.dtype == np.float32
  np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["linear_up", "linear_down"])
def test_text_equals_torch_interpolate(torch_outputs, case):
  x, y = torch_outputs[f"{case}/x"], torch_outputs[f"{case}/y"]
  got = resize.resize_text_posemb(x, y.shape[0], method="linear")
  np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,size", [((5, 7, 3), (9, 4)), ((12, 6, 2), (4, 10))])
def test_zoom_linear_equals_scipy(shape, size):
  x = np.random.default_rng(1).standard_normal(shape)
  zoom = (size[0] / shape[0], size[1] / shape[1], 1)
  want = scipy.ndimage.zoom(x, zoom, order=1)
  assert want.shape[:2] == size
  np.testing.assert_allclose(resize.resize_grid(x, size, method="zoom_linear"), want, atol=1e-12)


def test_image_posemb_keeps_the_class_row_and_is_row_major():
  rng = np.random.default_rng(2)
  h, w, nh, nw, d = 3, 5, 6, 4, 8
  table = rng.standard_normal((1, 1 + h * w, d)).astype(np.float32)
  out = resize.resize_image_posemb(
    table, (h, w), (nh, nw), extra_tokens=1, method="bicubic_antialias"
  )
  assert out.shape == (1, 1 + nh * nw, d)
  np.testing.assert_array_equal(out[0, 0], table[0, 0])
  grid = resize.resize_grid(table[0, 1:].reshape(h, w, d), (nh, nw), method="bicubic_antialias")
  np.testing.assert_allclose(out[0, 1:], grid.reshape(nh * nw, d), rtol=1e-6)


def test_image_posemb_refuses_a_table_of_another_grid():
  with pytest.raises(ValueError, match="needs 17"):
    resize.resize_image_posemb(np.zeros((1, 10, 4)), (4, 4), (6, 6), extra_tokens=1)


def test_patch_grid_refuses_a_size_the_patch_does_not_divide():
  with pytest.raises(ValueError, match="not divisible by the patch size 16"):
    resize.patch_grid(330, 16)
  assert resize.patch_grid((384, 224), 16) == (24, 14)
  assert resize.patch_grid(384, 14, drop_remainder=True) == (27, 27)


def test_load_pretrained_open_clip_equals_open_clip_resizing(torch_outputs):
  pre = models.load_pretrained(CLIP, image_size=24, max_len=12)
  np.testing.assert_allclose(
    pre.params["image"]["encoder"]["pos_embedding"][0],
    torch_outputs["open_clip_clip/visual"],
    rtol=1e-5,
    atol=1e-6,
  )
  np.testing.assert_allclose(
    pre.params["text"]["encoder"]["pos_embedding"],
    torch_outputs["open_clip_clip/text"],
    rtol=1e-5,
    atol=1e-6,
  )
  assert pre.model_config.encoders.image.image_size == 24
  assert pre.model_config.encoders.text.max_len == 12
  assert (pre.data.image_size, pre.data.resize, pre.data.max_len) == (24, 24, 12)
  model = models.make_model(pre.model_config)
  batch = {"image": np.zeros((2, 24, 24, 3), np.float32), "text": np.ones((2, 12), np.int32)}
  emb, _ = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))(pre.params, batch)
  assert emb["image"].shape == emb["text"].shape == (2, 16)
  assert np.all(np.isfinite(emb["image"]))


def test_load_pretrained_same_size_changes_nothing():
  a, b = models.load_pretrained(CLIP), models.load_pretrained(CLIP, image_size=16, max_len=8)
  pt.assert_params_bit_exact(a.params, b.params)


def test_load_pretrained_hf_uses_bicubic_without_antialias():
  a = models.load_pretrained(HF_CLIP)
  vit = models.make_encoder(a.model_config.encoders.image)
  p, (h, w) = vit.dims["patch_size"], vit.image_hw
  new = (h + 2 * p, w + 2 * p)
  b = models.load_pretrained(HF_CLIP, image_size=new[0])
  want = resize.resize_image_posemb(
    a.params["image"]["encoder"]["pos_embedding"],
    (h // p, w // p),
    (new[0] // p, new[1] // p),
    extra_tokens=1,
    method="bicubic",
  )
  np.testing.assert_allclose(b.params["image"]["encoder"]["pos_embedding"], want, rtol=1e-6)


def test_load_pretrained_big_vision_non_square_uses_linear_zoom():
  a = models.load_pretrained(BIG_VISION)
  vit = models.make_encoder(a.model_config.encoders.image)
  p, (h, w) = vit.dims["patch_size"], vit.image_hw
  # The zoom applies to a learned table: the fixture must have one for the test to mean anything.
  assert a.model_config.encoders.image.posemb == "learn"
  new = (h + p, w - p) if w > p else (h + p, w + 2 * p)
  b = models.load_pretrained(BIG_VISION, image_size=new)
  table = a.params["image"]["encoder"]["pos_embedding"]
  grid = table[0].reshape(h // p, w // p, -1)
  zoom = (new[0] / h, new[1] / w, 1)
  want = scipy.ndimage.zoom(grid, zoom, order=1).reshape(1, -1, grid.shape[-1])
  np.testing.assert_allclose(b.params["image"]["encoder"]["pos_embedding"], want, rtol=1e-5)
  model = models.make_model(b.model_config)
  emb, _ = model.apply(
    {"params": b.params}, {"image": np.zeros((1, *new, 3), np.float32)}, train=False
  )
  assert emb["image"].shape[0] == 1


def test_load_pretrained_refuses_bad_sizes():
  pt.one_line_error(
    "not divisible by the patch size 4", models.load_pretrained, CLIP, image_size=18
  )
  pt.one_line_error("max_len must be a positive int", models.load_pretrained, CLIP, max_len=0)
