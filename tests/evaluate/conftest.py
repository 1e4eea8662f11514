"""A fake model and fake sources whose answers are known.

Every record carries an integer id; the fake model embeds an image and a caption of the same id
to the same unit vector, so a perfect retrieval and zero-shot score is the right answer. A
hard-negative caption ("neg ...") gets an unrelated vector.
"""

import re

import jax.numpy as jnp
import numpy as np
import pytest

DIM = 16
TABLE = np.random.default_rng(123).normal(size=(2048, DIM)).astype(np.float32)
TABLE /= np.linalg.norm(TABLE, axis=1, keepdims=True)


def prepare(raw):
  out = {}
  if "image" in raw:
    img = np.asarray(raw["image"]).astype(np.int32)
    out["image"] = img[:, 0, 0, 0] * 256 + img[:, 0, 0, 1]
  if "text" in raw:
    ids = []
    for s in raw["text"]:
      m = re.search(r"c(\d+)", s)
      ids.append(int(m.group(1)) + (1000 if s.startswith("neg") else 0))
    out["text"] = np.asarray(ids, np.int32)
  return out


def embed_fn(batch):
  table = jnp.asarray(TABLE)
  return {k: table[v] for k, v in batch.items()}


def image_of(i):
  return np.array([[[i // 256, i % 256, 0]]], np.uint8)  # [1, 1, 3]


class FakeSource:
  """`n` records; record `i` shows id `ids[i]` (default `i % classes`, so several share one)."""

  def __init__(self, n=24, classes=6, captions_per_image=1, offset=0):
    self.n, self.classes, self.k, self.offset = n, classes, captions_per_image, offset

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    c = (i + self.offset) % self.classes
    caption = [f"a picture of c{c}"] * self.k if self.k > 1 else f"a picture of c{c}"
    return {
      "image": image_of(c),
      "caption": caption,
      "label": c,
      "meaning_id": c * 7,
      "heldout": bool(i % 2),
      "hard_negative_captions": (f"neg c{c}", ""),
      "hard_negative_valid": np.array([True, False]),
    }


def fake_source(**kwargs):
  from contrastive.evaluate import sources

  n_classes = kwargs.get("classes", 6)
  return sources.EvalSource(
    FakeSource(**kwargs),
    tuple(f"c{c}" for c in range(n_classes)),
    ("a {}", "the {}"),
    ("swap", "change"),
  )


@pytest.fixture
def fake():
  """`(embed_fn, prepare, sources)` for `run_tasks`."""
  return embed_fn, prepare, {"fake": fake_source}
