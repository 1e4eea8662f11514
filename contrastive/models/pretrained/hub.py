"""Checkpoints named by their Hugging Face Hub id, resolved through `huggingface_hub`'s cache.

```python
models.load_pretrained("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
models.load_pretrained(("ViT-B-32", "laion2b_s34b_b79k"))   # open_clip's (name, pretrained tag)
```

`resolve` turns either into a local directory, `huggingface_hub.snapshot_download`'s snapshot of
the repository (only the files a family reads: configs, tokenizer files and weights): downloaded
when the hub is reachable, read from the local cache when it is not or when `HF_HUB_OFFLINE=1`
(the cache is `HF_HUB_CACHE`, by default `~/.cache/huggingface/hub`, or `cache_dir=`). Neither:
one `PretrainedError` line that says how to get it. An open_clip pair is looked up in
`OPEN_CLIP_HUB` (open_clip's own `(name, tag) -> hf_hub` table, for the architectures this library
loads) and then read like any `hf-hub:` id.
"""

from __future__ import annotations

import os
from typing import Any

from contrastive.models.pretrained.common import PretrainedError

PREFIX = "hf-hub:"
# What a checkpoint directory of any family holds (weights, configs, tokenizer files).
ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.bin", "*.npz", "*.txt", "*.model", "*.gz")

# (open_clip model name, pretrained tag) -> hub repository: the `hf_hub` entries of open_clip's
# `src/open_clip/pretrained.py` (mlfoundations/open_clip, commit 0134a455) for the ViT CLIP and
# SigLIP models this library loads. Tags are matched as open_clip matches them (lower case, `-`
# read as `_`).
OPEN_CLIP_HUB: dict[tuple[str, str], str] = {
  ("ViT-B-32", "laion2b_s34b_b79k"): "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
  ("ViT-B-32", "datacomp_xl_s13b_b90k"): "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
  ("ViT-B-32", "datacomp_m_s128m_b4k"): "laion/CLIP-ViT-B-32-DataComp.M-s128M-b4K",
  ("ViT-B-32", "datacomp_s_s13m_b4k"): "laion/CLIP-ViT-B-32-DataComp.S-s13M-b4K",
  ("ViT-B-32-256", "datacomp_s34b_b86k"): "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K",
  ("ViT-B-16", "laion2b_s34b_b88k"): "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
  ("ViT-B-16", "datacomp_xl_s13b_b90k"): "laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K",
  ("ViT-B-16", "datacomp_l_s1b_b8k"): "laion/CLIP-ViT-B-16-DataComp.L-s1B-b8K",
  ("ViT-L-14", "laion2b_s32b_b82k"): "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
  ("ViT-L-14", "datacomp_xl_s13b_b90k"): "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",
  ("ViT-H-14", "laion2b_s32b_b79k"): "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
  ("ViT-g-14", "laion2b_s12b_b42k"): "laion/CLIP-ViT-g-14-laion2B-s12B-b42K",
  ("ViT-g-14", "laion2b_s34b_b88k"): "laion/CLIP-ViT-g-14-laion2B-s34B-b88K",
  ("ViT-bigG-14", "laion2b_s39b_b160k"): "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
  ("ViT-B-16-SigLIP", "webli"): "timm/ViT-B-16-SigLIP",
  ("ViT-B-16-SigLIP-256", "webli"): "timm/ViT-B-16-SigLIP-256",
  ("ViT-B-16-SigLIP-384", "webli"): "timm/ViT-B-16-SigLIP-384",
  ("ViT-B-16-SigLIP-512", "webli"): "timm/ViT-B-16-SigLIP-512",
  ("ViT-L-16-SigLIP-256", "webli"): "timm/ViT-L-16-SigLIP-256",
  ("ViT-L-16-SigLIP-384", "webli"): "timm/ViT-L-16-SigLIP-384",
  ("ViT-SO400M-14-SigLIP", "webli"): "timm/ViT-SO400M-14-SigLIP",
  ("ViT-SO400M-14-SigLIP-384", "webli"): "timm/ViT-SO400M-14-SigLIP-384",
}


def is_hub_name(path: Any) -> bool:
  """Whether `path` names a hub checkpoint: `"hf-hub:ORG/NAME"` or an open_clip
  `(name, tag)` pair."""
  if isinstance(path, (tuple, list)):
    return len(path) == 2 and all(isinstance(p, str) for p in path)
  return isinstance(path, str) and path.startswith(PREFIX)


def open_clip_repo(name: str, tag: str) -> str:
  """The hub repository of an open_clip `(name, pretrained tag)` pair."""
  key = (name, tag.lower().replace("-", "_"))
  if key not in OPEN_CLIP_HUB:
    known = sorted(f"{n}:{t}" for n, t in OPEN_CLIP_HUB if n == name) or sorted(
      {n for n, _ in OPEN_CLIP_HUB}
    )
    raise PretrainedError(
      f"No hub checkpoint for open_clip ({name!r}, {tag!r}); known: {', '.join(known)}."
    )
  return OPEN_CLIP_HUB[key]


def repo_id(path: Any) -> str:
  """`ORG/NAME` of an `hf-hub:` id or an open_clip pair."""
  if isinstance(path, (tuple, list)):
    return open_clip_repo(*path)
  repo = path[len(PREFIX) :].strip("/")
  if repo.count("/") != 1 or not all(repo.split("/")):
    raise PretrainedError(f"{path!r} is not a hub id: expected 'hf-hub:ORG/NAME'.")
  return repo


def _offline() -> bool:
  return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def resolve(
  path: Any, *, cache_dir: str | os.PathLike | None = None, revision: str | None = None
) -> str:
  """The local snapshot directory of a hub checkpoint (see the module docstring).

  Raises:
    PretrainedError: a bad id, or a checkpoint neither in the cache nor reachable (one line).
  """
  import huggingface_hub
  from huggingface_hub import constants
  from huggingface_hub import errors

  repo = repo_id(path)
  kwargs = dict(
    repo_id=repo,
    revision=revision,
    cache_dir=None if cache_dir is None else os.fspath(cache_dir),
    allow_patterns=list(ALLOW_PATTERNS),
  )
  offline = _offline()
  try:
    return huggingface_hub.snapshot_download(**kwargs, local_files_only=offline)
  except errors.LocalEntryNotFoundError as e:
    cache = cache_dir or constants.HF_HUB_CACHE
    why = "HF_HUB_OFFLINE=1" if offline else f"the hub cannot be reached ({_first_line(e)})"
    raise PretrainedError(
      f"{PREFIX}{repo} is not in the Hugging Face cache ({cache}) and {why}: download it once "
      f"where there is network (`huggingface-cli download {repo}`) or point HF_HUB_CACHE at a "
      "cache that has it."
    ) from None
  except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.GatedRepoError) as e:
    raise PretrainedError(f"{PREFIX}{repo}: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
