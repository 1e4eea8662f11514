"""big_vision SigLIP `.npz`: parity with transformers on the same weights, layouts, errors.

`fixtures/big_vision_siglip/siglip_tiny.npz` (written by `_fixtures_big_vision.py`) holds a tiny
random transformers `SiglipModel` in big_vision's published layout (`params/img/...`, scanned
blocks); `expected.npz` holds what that `SiglipModel` computes for fixed inputs.
"""

import os
import shutil
import zipfile

import flax
import jax
import numpy as np
import pytest

from contrastive import data
from contrastive import models
from contrastive.models.pretrained import big_vision
from tests import peers
from tests import pretrained_testing as pt
from tests.models.pretrained import _fixtures_big_vision as bv_fx
from tests.models.pretrained import _fixtures_hf as hf_fx

HERE = os.path.dirname(os.path.abspath(__file__))
DIRECTORY = os.path.join(HERE, "fixtures", "big_vision_siglip")
NPZ = os.path.join(DIRECTORY, "siglip_tiny.npz")


def _arrays(path=NPZ):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def _unrolled(arrays, *, prefix=""):
  """The same params with one `encoderblock_{i}` per layer (and keys under `prefix`)."""
  out = {}
  for key, value in arrays.items():
    bare = key[len(big_vision.PREFIX) :]
    if "/encoderblock/" in bare:
      for i, layer in enumerate(value):
        out[prefix + bare.replace("/encoderblock/", f"/encoderblock_{i}/")] = layer
    else:
      out[prefix + bare] = value
  return out


def test_embeddings_scale_and_bias_match_transformers_on_the_same_weights():
  pre = big_vision.load(NPZ)
  expected = np.load(os.path.join(DIRECTORY, "expected.npz"))
  emb, extras = pt.embed(pre, expected)
  for modality in ("image", "text"):
    assert np.abs(emb[modality] - expected[f"expected_{modality}"]).max() <= 1e-4
  np.testing.assert_allclose(extras["scale"], expected["expected_scale"], rtol=1e-6)
  np.testing.assert_allclose(extras["bias"], expected["expected_bias"], rtol=1e-6)
  config = pre.model_config
  assert config.convention == "siglip" and config.embed_dim == 32
  assert config.encoders.image.pool == "map" and not config.encoders.image.proj
  assert config.encoders.text.pad_id is None and config.encoders.text.pool == "last"
  assert pre.family == "big_vision"


def test_unrolled_layout_without_prefix_loads_the_same(tmp_path):
  path = str(tmp_path / "unrolled.npz")
  np.savez(path, **_unrolled(_arrays()))
  pt.assert_params_bit_exact(big_vision.load(path).params, big_vision.load(NPZ).params)


def test_scanned_params_are_this_librarys_scanned_layout():
  pre = big_vision.load(NPZ)
  stacked = models.stack_layers(pre.params)
  block = stacked["image"]["encoder"]["transformer"]["encoderblock"]
  arrays = _arrays()
  np.testing.assert_array_equal(
    block["attn"]["query"]["kernel"],
    arrays["params/img/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel"],
  )
  config = pre.model_config.copy_and_resolve_references()
  config.scan = True
  x = np.load(os.path.join(DIRECTORY, "expected.npz"))
  emb, _ = models.make_model(config).apply({"params": stacked}, {"image": x["images"]}, train=False)
  assert np.abs(emb["image"] - x["expected_image"]).max() <= 1e-4


def test_dispatch_file_and_directory():
  assert big_vision.detect(NPZ) and big_vision.detect(DIRECTORY)
  assert models.pretrained.detect_family(NPZ) == "big_vision"
  pt.assert_params_bit_exact(models.load_pretrained(DIRECTORY).params, big_vision.load(NPZ).params)
  assert not big_vision.detect(os.path.join(HERE, "fixtures", "hf_siglip"))


@pytest.mark.parametrize("name", ["mu/4", "siglip_mu4_16", "mu/4_16"])
def test_name_that_agrees_with_the_shapes(name):
  assert big_vision.load(NPZ, name=name).model_config.encoders.image.image_size == 16


@pytest.mark.parametrize(
  "name, match",
  [
    ("B/16", "is a B/16 .width 768."),
    ("siglip_mu4_32", "says image side 32"),
    ("vit-large", "gives no variant"),
  ],
)
def test_name_that_disagrees(name, match):
  assert NPZ in pt.one_line_error(match, big_vision.load, NPZ, name=name)


def test_image_side_from_a_position_table_that_the_patch_does_not_tile():
  # So400m/14 at 384 px: 27 x 27 patches, the last 6 px dropped by the VALID convolution.
  shapes = {
    "image/encoder/embedding/kernel": (14, 14, 3, 32),
    "image/encoder/pos_embedding": (1, 27 * 27, 32),
    "image/encoder/transformer/encoderblock/attn/query/kernel": (2, 32, 4, 8),
    "image/encoder/transformer/encoderblock/mlp/fc1/kernel": (2, 32, 64),
    "image/encoder/map/probe": (1, 1, 32),
    "text/encoder/embedding/embedding": (64, 32),
    "text/encoder/pos_embedding": (1, 16, 32),
    "text/encoder/transformer/encoderblock/attn/query/kernel": (2, 32, 4, 8),
    "text/encoder/transformer/encoderblock/mlp/fc1/kernel": (2, 32, 64),
    "text/head/kernel": (32, 32),
    "log_scale": (1,),
    "bias": (1,),
  }
  image = big_vision.model_config_from_shapes(shapes, npz="x.npz").encoders.image
  assert image.image_size == 384 and image.drop_remainder
  model = models.ViT(
    width=32,
    depth=1,
    mlp_dim=64,
    num_heads=4,
    patch_size=14,
    image_size=384,
    drop_remainder=True,
    pool="map",
  )
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), np.zeros((1, 384, 384, 3)), train=False)
  )
  assert flax.linen.unbox(variables)["params"]["pos_embedding"].shape == (1, 729, 32)


def test_truncated_npz(tmp_path):
  path = str(tmp_path / "cut.npz")
  with open(NPZ, "rb") as f:
    blob = f.read()
  with open(path, "wb") as f:
    f.write(blob[: len(blob) // 2])
  assert path in pt.one_line_error("truncated", big_vision.load, path)


def test_a_key_of_another_model(tmp_path):
  path = str(tmp_path / "other.npz")
  np.savez(path, **_arrays(), **{"params/img/Transformer/posembed_input/pos": np.zeros(3)})
  message = pt.one_line_error("unknown key", big_vision.load, path)
  assert "posembed_input" in message


def test_not_a_two_tower_model(tmp_path):
  path = str(tmp_path / "vit.npz")
  np.savez(path, **{k: v for k, v in _arrays().items() if k.startswith("params/img/")})
  assert not big_vision.detect(path)
  pt.one_line_error(
    "not a big_vision two-tower model: no txt/Embed_0/embedding", big_vision.load, path
  )


def test_a_missing_tensor(tmp_path):
  path = str(tmp_path / "missing.npz")
  arrays = _arrays()
  del arrays["params/img/MAPHead_0/LayerNorm_0/scale"]
  np.savez(path, **arrays)
  message = pt.one_line_error("no img/MAPHead_0", big_vision.load, path)
  assert "img/MAPHead_0/LayerNorm_0/scale" in message


def test_shapes_that_disagree(tmp_path):
  path = str(tmp_path / "bad.npz")
  arrays = _unrolled(_arrays(), prefix="params/")
  key = "params/txt/Encoder_0/encoderblock_1/MlpBlock_0/Dense_0/kernel"
  arrays[key] = np.zeros((32, 48), np.float32)
  np.savez(path, **arrays)
  message = pt.one_line_error("has shape", big_vision.load, path)
  assert "txt/Encoder_0/encoderblock_1/MlpBlock_0/Dense_0/kernel" in message
  assert "(32, 48)" in message and "(32, 64)" in message


def test_data_settings_and_tokenizer_beside_the_npz(tmp_path):
  pre = big_vision.load(NPZ)
  assert pre.data.mean == pre.data.std == (0.5, 0.5, 0.5) and pre.data.crop == "squash"
  assert pre.data.max_len == 16 and pre.data.image_size == 16
  missing = pre.data.tokenizer
  assert missing == "big_vision:" + os.path.join(DIRECTORY, "sentencepiece.model")
  with pytest.raises(FileNotFoundError, match="sentencepiece.model"):
    data.make_tokenizer(missing)
  shutil.copy(NPZ, tmp_path / "m.npz")
  (tmp_path / "cc_en.model").write_bytes(b"")
  found = big_vision.load(str(tmp_path / "m.npz")).data.tokenizer
  assert found == "big_vision:" + str(tmp_path / "cc_en.model")


def test_fixture_keys_follow_big_visions_published_layout():
  with zipfile.ZipFile(NPZ) as archive:
    names = {n[:-4] for n in archive.namelist()}
  for key in (
    "params/t",
    "params/b",
    "params/img/embedding/kernel",
    "params/img/pos_embedding",
    "params/img/MAPHead_0/probe",
    "params/txt/Embed_0/embedding",
    "params/txt/head/kernel",
    "params/txt/Encoder_0/encoder_norm/scale",
    "params/img/Transformer/encoderblock/MlpBlock_0/Dense_1/bias",
  ):
    assert key in names, key
  assert not any(n.startswith("params/img/head/") for n in names)  # SigLIP: no image projection


def test_live_against_transformers(tmp_path):
  torch = pytest.importorskip("torch")
  peers.install_torchvision_stand_in()
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(7)
  model = transformers.SiglipModel(transformers.SiglipConfig(**hf_fx.SIGLIP_TINY)).eval()
  hf_fx.randomize(model, torch, 7)
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  path = str(tmp_path / "live.npz")
  np.savez(path, **bv_fx.to_big_vision(state, hf_fx.WIDTH))
  x = hf_fx.inputs()
  expected = hf_fx.embeddings(model, x, torch)
  emb, extras = pt.embed(big_vision.load(path), x)
  for modality in ("image", "text"):
    np.testing.assert_allclose(emb[modality], expected[modality], atol=1e-4)
  np.testing.assert_allclose(extras["bias"], expected["bias"], rtol=1e-6)
