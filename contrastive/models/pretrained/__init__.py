"""Published checkpoints in and out: open_clip / OpenAI CLIP, Hugging Face, big_vision.

```python
pre = models.load_pretrained(path, name=None)     # a file or a directory, as downloaded
model = models.make_model(pre.model_config)
emb, extras = model.apply({"params": pre.params}, batch, train=False)
models.save_pretrained(pre, params, out_dir, family="open_clip")   # or family="hf"
```

`load_pretrained` asks each family, in the order open_clip, hf, big_vision, whether the path is
its layout (`detect`) and loads with the first that says yes; `name=` an open_clip model name
picks open_clip for any weights file. Anything else is refused with what the path holds and what
each family expects.

A family module (`open_clip.py`, `hf.py`, `big_vision.py`) names keys and reshapes, nothing
else:

- `detect(path) -> bool`: whether `path` (a file or a directory) is this family's layout;
- `load(path, *, name=None) -> Pretrained`: config, params (float32 numpy, this library's
  layout), data settings; one-line `PretrainedError`s naming the file and the mismatch;
- `save(model_config, params, path, **extras) -> None` (open_clip and hf): the layout the peer
  library reads unchanged; `extras` may carry `data` and `meta` of a `Pretrained`. A round trip
  here -> family -> here is bit-exact.

Shared pieces: `common` (the `Pretrained` result, `PretrainedError`, data settings, flat
parameter shapes) and `weights` (lazy readers for safetensors, sharded safetensors, npz and
`.bin`, and a safetensors writer).
"""

from contrastive.models.pretrained.common import Pretrained
from contrastive.models.pretrained.common import PretrainedError
from contrastive.models.pretrained.common import describe
from contrastive.models.pretrained.families import FAMILIES
from contrastive.models.pretrained.families import SAVE_FAMILIES
from contrastive.models.pretrained.families import detect_family
from contrastive.models.pretrained.families import family_module
from contrastive.models.pretrained.families import load_pretrained
from contrastive.models.pretrained.families import save_pretrained

__all__ = [
  "FAMILIES",
  "Pretrained",
  "PretrainedError",
  "SAVE_FAMILIES",
  "describe",
  "detect_family",
  "family_module",
  "load_pretrained",
  "save_pretrained",
]
