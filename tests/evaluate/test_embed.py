"""embed_dataset: padding the last batch changes nothing; batches are placed on the mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import parallel
from contrastive.evaluate import embed
from contrastive.evaluate import retrieval

RNG = np.random.default_rng(0)
W_IMAGE = RNG.normal(size=(12, 8)).astype(np.float32)
W_TEXT = RNG.normal(size=(5, 8)).astype(np.float32)


def _model(batch):
  out = {}
  if "image" in batch:
    out["image"] = jnp.tanh(batch["image"] @ W_IMAGE)
  if "text" in batch:
    out["text"] = jnp.tanh(batch["text"] @ W_TEXT)
  return out


def _data(n=21):
  rng = np.random.default_rng(1)
  return {
    "image": rng.normal(size=(n, 12)).astype(np.float32),
    "text": rng.normal(size=(n, 5)).astype(np.float32),
  }


def _batches(data, size):
  n = len(data["image"])
  return ({k: v[i : i + size] for k, v in data.items()} for i in range(0, n, size))


@pytest.mark.parametrize("batch_size, use_mesh", [(8, False), (16, True), (5, False)])
def test_padding_changes_nothing(batch_size, use_mesh):
  data = _data()
  want = {k: np.asarray(v) for k, v in _model(data).items()}
  mesh = parallel.make_mesh() if use_mesh else None
  got = embed.embed_dataset(_model, _batches(data, batch_size), batch_size=batch_size, mesh=mesh)
  assert set(got) == {"image", "text"}
  for k in want:
    assert got[k].shape == (21, 8)
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
  # And the metrics computed from them are those of the unpadded embeddings.
  y_to_x = np.arange(21)
  assert retrieval.retrieval_metrics(got["image"], got["text"], y_to_x=y_to_x) == (
    retrieval.retrieval_metrics(want["image"], want["text"], y_to_x=y_to_x)
  )


def test_batches_are_sharded_over_the_mesh():
  mesh = parallel.make_mesh()
  seen = []

  def fn(batch):
    seen.append(batch["image"].sharding)
    return {"image": batch["image"] * 2}

  data = {"image": np.ones((10, 3), np.float32)}
  out = embed.embed_dataset(fn, [data], batch_size=16, mesh=mesh, jit=False)
  assert out["image"].shape == (10, 3)
  assert seen[0].spec == jax.sharding.PartitionSpec(("data", "fsdp"))
  assert seen[0].mesh.shape["data"] == 8


def test_pad_batch_repeats_the_last_row():
  padded, n = embed.pad_batch({"a": np.array([1, 2, 3])}, 5)
  assert n == 3
  np.testing.assert_array_equal(padded["a"], [1, 2, 3, 3, 3])


def test_errors():
  with pytest.raises(ValueError, match=r"not divisible by the 8 devices"):
    embed.embed_dataset(_model, _batches(_data(), 4), batch_size=4, mesh=parallel.make_mesh())
  with pytest.raises(ValueError, match=r"same leading size in \[1, 4\].*'image': 5"):
    embed.pad_batch({"image": np.zeros((5, 2)), "text": np.zeros((5, 2))}, 4)
  with pytest.raises(ValueError, match=r"No batches"):
    embed.embed_dataset(_model, [], batch_size=4)
  with pytest.raises(ValueError, match=r"must be \[4, dim\]"):
    embed.embed_dataset(
      lambda b: {"image": b["image"][:2]}, [{"image": np.zeros((3, 2))}], batch_size=4
    )
