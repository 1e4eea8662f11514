"""The data config: every key of `config.data`, its default, and the check for unknown keys."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from contrastive.data import sources as sources_lib


def default_config() -> ml_collections.ConfigDict:
  """The data config (`config.data`) with every key and its default."""
  c = ml_collections.ConfigDict()
  c.source = "synthetic"  # a key of sources.SOURCES: "synthetic", "tfds", "arrayrecord", "xor"
  c.train_split = "train"
  c.eval_split = "test"
  c.image_key = "image"  # record fields; "/" reaches into nested features
  c.text_key = "caption"  # a str or a list of captions (one is sampled in training)
  c.label_key = config_dict.placeholder(str)  # copied to the batch as "label" if set
  c.image_size = 64
  c.batch_size = 256  # GLOBAL batch size; must divide by the process count
  c.tokenizer = "bytes"  # "bytes", a SentencePiece *.model path or an HF tokenizers *.json path
  c.max_len = 128  # the built-in captions are at most 109 bytes
  c.num_workers = 0  # grain worker processes per host (0: the main process)
  c.worker_buffer_size = 2  # batches each worker prepares ahead
  c.read_threads = 1  # threads per process that read and transform examples
  c.read_buffer_size = 64  # examples those threads prepare ahead
  c.seed = 0  # shuffle and augmentation
  c.shuffle = True
  c.normalization = "clip"  # "clip", "inception" ([-1, 1]) or "unit" ([0, 1])
  c.random_resized_crop = False
  c.crop_scale = (0.9, 1.0)  # area fraction of the random resized crop
  c.flip = False  # horizontal; refused for the built-in dataset (left/right captions)
  c.text_delete_prob = 0.0  # token deletion (training only)
  c.text_mask_prob = 0.0  # token masking (training only)
  c.hard_negatives = False  # add "hard_negatives" [b, 3, max_len] (built-in dataset only)
  c.synthetic = ml_collections.ConfigDict(sources_lib.SYNTHETIC_DEFAULTS)
  c.tfds = ml_collections.ConfigDict(
    {"name": config_dict.placeholder(str), "data_dir": config_dict.placeholder(str)}
  )
  c.arrayrecord = ml_collections.ConfigDict({"path": config_dict.placeholder(str)})
  c.xor = ml_collections.ConfigDict(sources_lib.XOR_DEFAULTS)  # see contrastive.data.xor
  # Training on several sources by weight, {name: {weight, source, ...}}; empty: `source` alone.
  # See contrastive/data/mixture.py.
  c.mixture = ml_collections.ConfigDict()
  return c


def resolve_config(config: ml_collections.ConfigDict | dict) -> ml_collections.ConfigDict:
  """`config` (the data config, or a whole config with a `data` block) over `default_config()`.

  Raises:
    ValueError: a key `default_config()` does not have, listing the known ones.
  """
  if "source" not in config and "data" in config:
    config = config["data"]
  given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  out = default_config()
  unknown = sorted(set(given) - set(out))
  if unknown:
    raise ValueError(f"Unknown data config key(s) {unknown}; known: {sorted(out)}.")
  for key, value in given.items():
    if key == "mixture":  # its keys are names the user chooses (data.mixture)
      out.mixture = ml_collections.ConfigDict(dict(value or {}))
    elif isinstance(out[key], ml_collections.ConfigDict):
      block = dict(value or {})
      extra = sorted(set(block) - set(out[key]))
      if extra:
        raise ValueError(f"Unknown option(s) {extra} in data.{key}; known: {sorted(out[key])}.")
      for k, v in block.items():
        out[key][k] = v
    elif value is not None or key == "label_key":
      if isinstance(out[key], tuple) and isinstance(value, list):
        value = tuple(value)
      out[key] = value
  return out
