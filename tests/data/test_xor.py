"""The XOR source: determinism, c = a XOR b, no signal in any pair, the pipeline batch, errors."""

import math
import pickle

import numpy as np
import pytest

from contrastive.data import config as config_lib
from contrastive.data import pipeline
from contrastive.data import sources
from contrastive.data import xor as X

SIZE, BITS = 16, 4
PAIRS = [("a", "b", "c"), ("a", "c", "b"), ("b", "c", "a")]  # two modalities and the third


def _decode(image: np.ndarray, bits: int) -> np.ndarray:
  """The bits drawn in a uint8 image: cell means against the midpoint of empty and filled,
  from the layout the module docstring states (a square of half the side in each cell)."""
  size = image.shape[0]
  columns = math.ceil(math.sqrt(bits))
  cell = size // columns
  margin = (size - columns * cell) // 2
  square = cell // 2
  empty = float(X.BACKGROUND)
  filled = empty + (square / cell) ** 2 * (X.FOREGROUND - X.BACKGROUND)
  out = np.zeros(bits, np.int32)
  for j in range(bits):
    top, left = margin + (j // columns) * cell, margin + (j % columns) * cell
    mean = image[top : top + cell, left : left + cell].astype(np.float64).mean()
    out[j] = mean > (empty + filled) / 2
  return out


@pytest.fixture(scope="module")
def records():
  """4,000 noisy, jittered test records: decoded bits, raw pixels, drawn bits, per modality."""
  src = X.XorSource(
    split="test", num_examples=4000, image_size=SIZE, bits=BITS, seed=1, noise=0.05, jitter=True
  )
  rows = [src[i] for i in range(len(src))]
  return {
    m: dict(
      decoded=np.stack([_decode(r[m], BITS) for r in rows]),
      pixels=np.stack([r[m].reshape(-1) for r in rows]).astype(np.float32) / 255,
      bits=np.stack([r[f"{m}_bits"] for r in rows]),
    )
    for m in X.MODALITIES
  }


def _config(**xor_options):
  cfg = config_lib.default_config()
  cfg.update(dict(source="xor", image_size=SIZE, batch_size=8))
  cfg.xor.update(dict(bits=BITS, **xor_options))
  return cfg


def test_deterministic_by_seed_split_and_index():
  a = X.XorSource(split="train", num_examples=100, image_size=SIZE, seed=3, noise=0.1, jitter=True)
  b = pickle.loads(
    pickle.dumps(
      X.XorSource(split="train", num_examples=10, image_size=SIZE, seed=3, noise=0.1, jitter=True)
    )
  )
  for i in (0, 7, 9):
    ra, rb = a[i], b[i]
    assert ra["index"] == rb["index"] == i
    for key in X.XorSource.fields:
      np.testing.assert_array_equal(ra[key], rb[key])
  bits = lambda src: np.stack([src[i][f"{m}_bits"] for i in range(50) for m in "ab"])
  other_seed = X.XorSource(split="train", num_examples=100, image_size=SIZE, seed=4)
  test_split = X.XorSource(split="test", num_examples=100, image_size=SIZE, seed=3)
  assert not np.array_equal(bits(a), bits(other_seed))
  assert not np.array_equal(bits(a), bits(test_split))
  assert not np.array_equal(a[0]["a"], a[1]["a"]) or not np.array_equal(a[0]["b"], a[1]["b"])
  # The rendering options change the pictures, never the bits they show.
  plain = X.XorSource(split="train", num_examples=100, image_size=32, seed=3, tokens=("c",))
  np.testing.assert_array_equal(bits(a), bits(plain))
  assert plain[5]["c"] == "".join(map(str, plain[5]["c_bits"]))


def test_record_fields():
  r = X.XorSource(split="train", num_examples=5, image_size=SIZE, bits=9, tokens="b")[2]
  assert set(r) == set(X.XorSource.fields)
  assert r["a"].shape == r["c"].shape == (SIZE, SIZE, 3) and r["a"].dtype == np.uint8
  assert isinstance(r["b"], str) and len(r["b"]) == 9 and set(r["b"]) <= {"0", "1"}
  for m in X.MODALITIES:
    assert r[f"{m}_bits"].shape == (9,) and r[f"{m}_bits"].dtype == np.int32


def test_rendering_decodes_to_the_bits_and_c_is_a_xor_b(records):
  for m in X.MODALITIES:
    np.testing.assert_array_equal(records[m]["decoded"], records[m]["bits"])
  a, b, c = (records[m]["bits"] for m in X.MODALITIES)
  np.testing.assert_array_equal(c, a ^ b)
  # a and b: independent fair bits (4,000 records: one standard deviation of a share is 0.008).
  np.testing.assert_allclose(a.mean(0), 0.5, atol=0.03)
  np.testing.assert_allclose(b.mean(0), 0.5, atol=0.03)
  for j in range(BITS):
    for u in (0, 1):
      for v in (0, 1):
        assert abs(np.mean((a[:, j] == u) & (b[:, j] == v)) - 0.25) < 0.03
  assert np.abs(np.corrcoef(np.concatenate([a, b], 1).T) - np.eye(2 * BITS)).max() < 0.1


def _table_probe(x_train, y_train, x_test, y_test) -> float:
  """Accuracy of the Bayes-optimal probe from discrete features: the majority label of each
  feature value in training (ties and unseen values: 0)."""
  codes = lambda x: x @ (2 ** np.arange(x.shape[1]))
  train, test = codes(x_train), codes(x_test)
  table = {k: int(y_train[train == k].mean() > 0.5) for k in np.unique(train)}
  return float(np.mean(np.array([table.get(k, 0) for k in test]) == y_test))


def _mean_probe(x_train, y_train, x_test, y_test) -> float:
  """Accuracy of the nearest class mean (two classes) on raw features."""
  means = np.stack([x_train[y_train == k].mean(0) for k in (0, 1)])
  distance = ((x_test[:, None, :] - means[None]) ** 2).sum(-1)
  return float(np.mean(distance.argmin(1) == y_test))


@pytest.mark.parametrize("features,probe", [("decoded", _table_probe), ("pixels", _mean_probe)])
def test_no_single_modality_predicts_another(records, features, probe):
  half = 2000
  for source in X.MODALITIES:
    x = records[source][features]
    for target in X.MODALITIES:
      for j in range(BITS):
        y = records[target]["bits"][:, j]
        accuracy = probe(x[:half], y[:half], x[half:], y[half:])
        if target == source:  # the probe reads the modality itself
          assert accuracy > 0.95, (features, source, j, accuracy)
        else:
          assert abs(accuracy - 0.5) < 0.05, (features, source, target, j, accuracy)


def test_any_two_determine_the_third(records):
  half = 2000
  for first, second, third in PAIRS:
    x, y = records[first]["decoded"], records[second]["decoded"]
    np.testing.assert_array_equal(x ^ y, records[third]["bits"])
    pair = np.concatenate([x, y], 1)
    for j in range(BITS):
      z = records[third]["bits"][:, j]
      assert _table_probe(pair[:half], z[:half], pair[half:], z[half:]) == 1.0


def test_xor_prob_mixes_in_pairwise_information():
  def bits(p):
    src = X.XorSource(
      split="train", num_examples=2000, image_size=SIZE, xor_prob=p, tokens=X.MODALITIES
    )  # no pictures: only the bits matter here
    return [np.stack([src[i][f"{m}_bits"] for i in range(len(src))]) for m in X.MODALITIES]

  a, b, c = bits(0.0)
  np.testing.assert_array_equal(c, a)
  a2, b2, c2 = bits(0.5)
  np.testing.assert_array_equal(a2, a)  # the same a and b at every p
  np.testing.assert_array_equal(b2, b)
  # c_j = a_j unless the bit is XORed (1/2) and b_j is 1 (1/2).
  assert abs(np.mean(c2 == a2) - 0.75) < 0.03


def test_pipeline_batch_keys_shapes_and_dtypes():
  cfg = _config(noise=0.05, jitter=True)
  cfg.normalization = "unit"
  it = pipeline.make_pipeline(cfg, training=False, process_index=0, process_count=1)
  batch = next(it)
  assert it.num_batches == 2000 // 8
  assert set(batch) == {"a", "b", "c", "a_bits", "b_bits", "c_bits", "index", "mask"}
  src = sources.make_source(cfg, split="test")
  for m in X.MODALITIES:
    assert batch[m].shape == (8, SIZE, SIZE, 3) and batch[m].dtype == np.float32
    assert batch[f"{m}_bits"].shape == (8, BITS) and batch[f"{m}_bits"].dtype == np.int32
    for row in (0, 5):  # in order, unaugmented: the record's pixels in [0, 1]
      np.testing.assert_allclose(batch[m][row], src[row][m] / 255.0, atol=1e-6)
      np.testing.assert_array_equal(batch[f"{m}_bits"][row], src[row][f"{m}_bits"])
  assert batch["mask"].all() and list(batch["index"]) == list(range(8))

  cfg = _config(tokens=("c",))
  cfg.max_len = 8
  train = next(pipeline.make_pipeline(cfg, training=True, process_index=0, process_count=1))
  assert train["a"].dtype == np.float32 and train["c"].shape == (8, 8)
  assert train["c"].dtype == np.int32
  tokenizer = pipeline.make_tokenizer(cfg)
  for row in range(8):  # shuffled: rows differ from 0..7, each still consistent
    assert tokenizer.decode(train["c"][row]) == "".join(map(str, train["c_bits"][row]))
    np.testing.assert_array_equal(train["c_bits"][row], train["a_bits"][row] ^ train["b_bits"][row])
  assert list(train["index"]) != list(range(8))


@pytest.mark.parametrize("tokens", [(), ("c",)])
def test_a_batch_feeds_a_three_tower_model_and_symile(tokens):
  """The module docstring's run: the batch fits the towers and the loss (traced, not compiled:
  a shape or dtype that does not fit fails here)."""
  import jax

  from contrastive import losses
  from contrastive import models

  cfg = _config(tokens=tokens)
  cfg.max_len = 8
  batch = next(pipeline.make_pipeline(cfg, training=True, process_index=0, process_count=1))
  tower = dict(kind="cnn", image_size=SIZE, widths=(16, 32), width=64)
  text = dict(kind="text", variant="mu", vocab_size=259, max_len=8)
  model = models.make_model(
    dict(embed_dim=32, encoders=dict(a=tower, b=tower, c=text if tokens else tower))
  )

  def loss(inputs):
    variables = model.init(jax.random.key(0), inputs, train=False)
    emb, extras = model.apply(variables, inputs, train=False)
    return losses.symile_loss([emb[m] for m in X.MODALITIES], extras["scale"]), emb

  value, emb = jax.eval_shape(loss, {m: batch[m] for m in X.MODALITIES})
  assert value.shape == () and value.dtype == np.float32
  assert all(emb[m].shape == (8, 32) for m in X.MODALITIES)


def test_bad_options():
  with pytest.raises(ValueError, match=r"data.xor.bits must be an int in \[1, 256\], got 0"):
    X.XorSource(split="train", num_examples=4, bits=0)
  with pytest.raises(
    ValueError,
    match=r"data.image_size=16 is too small for data.xor.bits=25.*"
    r"at least 20",
  ):
    X.XorSource(split="train", num_examples=4, image_size=16, bits=25)
  X.XorSource(split="train", num_examples=4, image_size=4, bits=25, tokens=("a", "b", "c"))
  with pytest.raises(ValueError, match=r"data.xor.xor_prob must be in \[0, 1\], got 1.5"):
    X.XorSource(split="train", num_examples=4, xor_prob=1.5)
  with pytest.raises(ValueError, match="data.xor.noise must be a non-negative float, got -0.1"):
    X.XorSource(split="train", num_examples=4, noise=-0.1)
  with pytest.raises(ValueError, match=r"data.xor.tokens names \['d'\]"):
    X.XorSource(split="train", num_examples=4, tokens=("d",))
  with pytest.raises(ValueError, match=r"Unknown split 'validation' of data source 'xor'"):
    sources.make_source(_config(), split="validation")
  cfg = _config()
  cfg.xor.bits = 25
  with pytest.raises(ValueError, match="data.image_size=16 is too small"):
    pipeline.make_pipeline(cfg, process_index=0, process_count=1)
  with pytest.raises(ValueError, match=r"Unknown option\(s\) \['width'\] in data.xor"):
    config_lib.resolve_config(dict(source="xor", xor=dict(width=3)))
  for key, value in (("flip", True), ("random_resized_crop", True), ("text_mask_prob", 0.1)):
    cfg = _config()
    cfg[key] = value
    with pytest.raises(
      ValueError, match=f"data.{key}={value!r} has no effect on data source 'xor'"
    ):
      pipeline.make_pipeline(cfg, process_index=0, process_count=1)
  with pytest.raises(IndexError, match="out of range"):
    X.XorSource(split="train", num_examples=4)[4]
