"""A training mixture of several sources, by weight: `data.mixture`.

```python
config.data.mixture = dict(
    shapes=dict(weight=3.0),                                  # the data config as it is
    laion=dict(weight=1.0, source="arrayrecord", arrayrecord=dict(path="/data/laion")),
)
```

Each entry is a data config of its own: the run's `data` with the entry's keys over it (`source`
and its block, `image_key`, `text_key`, `label_key`, `train_split`, the transforms' keys), and a
`weight` >= 0. Each source is shuffled with a seed of its own (`data.seed + i`, reshuffled every
epoch) and repeated forever; `grain.MapDataset.mix` then interleaves them by weight, exactly and
deterministically: out of every `sum(w)` examples source `i` gives `w_i` (integer weights; real
weights in proportion). The mixture is one grain map dataset, so the iterator's state is a
position and a resumed run sees exactly the examples it would have seen. Every example carries
`source_id` (the entry's index, in the entries' sorted order); `DataIterator.source_counts`
counts them.

The entries share what makes one batch: the image size, the tokenizer and its length, the
batch size and the workers are the run's. Sources whose records come in groups that must share a
batch (the built-in contrast pairs, `synthetic.shape_variants > 1`) cannot be mixed. Evaluation
reads the run's own `data.source`, not the mixture.
"""

from __future__ import annotations

from collections.abc import Mapping
import math
from typing import Any

import ml_collections

SOURCE_ID = "source_id"
# Keys an entry may set: where its records come from and how they are read and augmented; the
# rest (image_size, tokenizer, max_len, batch_size, workers, seed) is the run's, shared by all.
ENTRY_KEYS = (
  "source",
  "train_split",
  "image_key",
  "text_key",
  "label_key",
  "shuffle",
  "random_resized_crop",
  "crop_scale",
  "flip",
  "text_delete_prob",
  "text_mask_prob",
  "synthetic",
  "tfds",
  "arrayrecord",
  "xor",
)


def entries(data_config: ml_collections.ConfigDict) -> list[tuple[str, float, Any]]:
  """`[(name, weight, data config of the entry)]` of `data.mixture`, sorted by name; entries of
  weight 0 are left out.

  Raises:
    ValueError: an entry that is not a group, an unknown key, a weight that is not a finite
      number >= 0, or every weight zero.
  """
  out = []
  for name in sorted(data_config.mixture):
    spec = data_config.mixture[name]
    where = f"data.mixture.{name}"
    if not isinstance(spec, Mapping | ml_collections.ConfigDict):
      raise ValueError(f"{where} must be a group like dict(weight=1.0, source='tfds', ...).")
    spec = spec.to_dict() if isinstance(spec, ml_collections.ConfigDict) else dict(spec)
    weight = spec.pop("weight", None)
    ok = isinstance(weight, (int, float)) and not isinstance(weight, bool)
    if not ok or not math.isfinite(weight) or weight < 0:
      raise ValueError(f"{where}.weight must be a finite number >= 0, got {weight!r}.")
    unknown = sorted(set(spec) - set(ENTRY_KEYS))
    if unknown:
      raise ValueError(
        f"{where} sets {unknown[0]!r}, which the mixture's sources share (the run's data."
        f"{unknown[0]}) or which is unknown; an entry sets weight and {sorted(ENTRY_KEYS)}."
      )
    config = ml_collections.ConfigDict(data_config.to_dict())
    config.mixture = ml_collections.ConfigDict()
    for key, value in spec.items():
      if isinstance(config[key], ml_collections.ConfigDict):
        config[key].update(dict(value or {}))
      else:
        config[key] = value
    if weight > 0:
      out.append((name, float(weight), config))
  if not out:
    raise ValueError(
      f"data.mixture gives every source weight zero ({sorted(data_config.mixture)}); give at "
      "least one a positive weight."
    )
  return out
