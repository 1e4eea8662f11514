"""Weight files, read lazily and written without torch: safetensors, sharded safetensors, npz, .bin.

`open_weights(path)` gives a `Weights`: the keys and shapes of a checkpoint, with each array read
only when it is taken (`pop`), so a conversion that pops as it goes holds one copy of the model
plus one tensor. Formats:

| file                       | read with                                                  |
| -------------------------- | ---------------------------------------------------------- |
| `*.safetensors`            | checked by `safetensors.safe_open`, read by its header (BF16 too) |
| `*.safetensors.index.json` | the index's `weight_map`, each shard as above              |
| `*.npz`                    | numpy, each member's header read for its shape             |
| `*.bin`, `*.pt`, `*.pth`   | `torch.load(mmap=True, weights_only=True)` (the `torch` extra) |

A `.bin` holding `{"state_dict": ...}` (or `{"model": ...}`) is unwrapped and a `module.` prefix
on every key (DDP) is dropped. Floating arrays come out as float32 whatever their stored dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
import json
import os
import struct
import zipfile

import numpy as np

from contrastive.models.pretrained.common import PretrainedError

TORCH_HINT = "reading .bin needs torch: pip install contrastive[torch]"
TORCH_SUFFIXES = (".bin", ".pt", ".pth")


class Weights:
  """A checkpoint's arrays by key, each read when taken.

  Attributes:
    path: the file (or index) read.
  """

  def __init__(
    self,
    path: str,
    shapes: Mapping[str, tuple[int, ...]],
    read: Callable[[str], np.ndarray],
    files: Mapping[str, str] | None = None,
  ):
    self.path = path
    self._shapes = dict(shapes)
    self._read = read
    self._files = dict(files or {})

  def keys(self) -> list[str]:
    return list(self._shapes)

  def __contains__(self, key: object) -> bool:
    return key in self._shapes

  def __iter__(self) -> Iterator[str]:
    return iter(list(self._shapes))

  def __len__(self) -> int:
    return len(self._shapes)

  def shape(self, key: str) -> tuple[int, ...]:
    """The stored shape of `key`, without reading it."""
    return self._shapes[key]

  def file(self, key: str) -> str:
    """The file holding `key` (the shard of a sharded checkpoint)."""
    return self._files.get(key, self.path)

  def pop(self, key: str) -> np.ndarray:
    """Reads `key` (floats as float32) and forgets it."""
    if key not in self._shapes:
      raise PretrainedError(f"{self.path}: no key {key!r}.")
    array = np.asarray(self._read(key))
    del self._shapes[key]
    if np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16":
      array = array.astype(np.float32)
    return array


def _truncated(path: str, error: Exception) -> PretrainedError:
  return PretrainedError(
    f"{path}: not a complete safetensors file ({error}); the download may be truncated."
  )


_DTYPES = {
  "F16": "float16",
  "F32": "float32",
  "F64": "float64",
  "I8": "int8",
  "I16": "int16",
  "I32": "int32",
  "I64": "int64",
  "U8": "uint8",
  "BOOL": "bool",
}


def _safetensors(path: str) -> Weights:
  """The safetensors API checks the file (header, sizes); tensors are then read by the header's
  offsets with plain reads, not a memory map, so a converted tensor's source bytes do not stay
  resident (a mapped file keeps every page it touched, doubling a load's peak memory)."""
  try:
    from safetensors import safe_open

    with safe_open(path, framework="np") as handle:
      names = set(handle.keys())
    with open(path, "rb") as f:
      (length,) = struct.unpack("<Q", f.read(8))
      header = json.loads(f.read(length))
  except Exception as e:
    raise _truncated(path, e) from e
  header = {k: v for k, v in header.items() if k in names}
  unknown = sorted({v["dtype"] for v in header.values()} - set(_DTYPES) - {"BF16"})
  if unknown:
    raise PretrainedError(f"{path}: tensors of dtype {unknown[0]} cannot be read as floats.")

  def read(key: str) -> np.ndarray:
    entry = header[key]
    begin, end = entry["data_offsets"]
    if entry["dtype"] == "BF16":
      import ml_dtypes  # a jax dependency

      dtype = np.dtype(ml_dtypes.bfloat16)
    else:
      dtype = np.dtype(_DTYPES[entry["dtype"]])
    buffer = bytearray(end - begin)
    with open(path, "rb") as f:
      f.seek(8 + length + begin)
      if f.readinto(buffer) != len(buffer):
        raise _truncated(path, EOFError(f"tensor {key} ends past the end of the file"))
    return np.frombuffer(buffer, dtype).reshape(entry["shape"])

  return Weights(path, {k: tuple(v["shape"]) for k, v in header.items()}, read)


def _sharded(index_path: str) -> Weights:
  try:
    with open(index_path) as f:
      weight_map = json.load(f)["weight_map"]
  except (OSError, ValueError, KeyError) as e:
    raise PretrainedError(
      f"{index_path}: not a safetensors index with a 'weight_map' ({type(e).__name__}: {e})."
    ) from e
  directory = os.path.dirname(index_path)
  shards: dict[str, Weights] = {}
  for name in sorted(set(weight_map.values())):
    shard = os.path.join(directory, name)
    if not os.path.isfile(shard):
      raise PretrainedError(f"{index_path}: names shard {name}, which is not in {directory}.")
    shards[name] = _safetensors(shard)
  shapes, files = {}, {}
  for key, name in weight_map.items():
    if key not in shards[name]:
      raise PretrainedError(f"{index_path}: maps {key!r} to {name}, which does not hold it.")
    shapes[key], files[key] = shards[name].shape(key), shards[name].path
  return Weights(index_path, shapes, lambda key: shards[weight_map[key]].pop(key), files)


def _npz(path: str) -> Weights:
  try:
    archive = zipfile.ZipFile(path)
    shapes = {}
    for member in archive.namelist():
      if not member.endswith(".npy"):
        continue
      with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        read_header = (
          np.lib.format.read_array_header_1_0
          if version == (1, 0)
          else np.lib.format.read_array_header_2_0
        )
        shape, _, _ = read_header(f)
      shapes[member[:-4]] = tuple(shape)
    data = np.load(path)
  except Exception as e:
    raise PretrainedError(
      f"{path}: not a readable .npz file ({type(e).__name__}: {e}); the download may be truncated."
    ) from e
  return Weights(path, shapes, lambda key: data[key])


def _torch_state_dict(path: str) -> dict:
  try:
    import torch
  except ImportError as e:
    raise PretrainedError(f"{path}: {TORCH_HINT}") from e
  try:
    try:
      checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
      if "mmap" not in str(e):  # a legacy (non-zip) file cannot be memory-mapped
        raise
      checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    try:  # OpenAI's original CLIP files are TorchScript archives
      checkpoint = torch.jit.load(path, map_location="cpu").state_dict()
    except Exception:
      raise PretrainedError(
        f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''})."
      ) from e
  for wrapper in ("state_dict", "model"):
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(wrapper), Mapping):
      checkpoint = checkpoint[wrapper]
  if not isinstance(checkpoint, Mapping):
    raise PretrainedError(f"{path}: holds a {type(checkpoint).__name__}, not a state_dict.")
  state = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
  if state and all(k.startswith("module.") for k in state):
    state = {k[len("module.") :]: v for k, v in state.items()}
  return state


def _torch(path: str) -> Weights:
  state = _torch_state_dict(path)

  def read(key: str) -> np.ndarray:
    import torch

    tensor = state.pop(key)
    if tensor.is_floating_point():
      tensor = tensor.to(torch.float32)
    return tensor.numpy()

  return Weights(path, {k: tuple(v.shape) for k, v in state.items()}, read)


def open_weights(path: str | os.PathLike) -> Weights:
  """The arrays of one weight file (see the module docstring for the formats).

  Raises:
    PretrainedError: a missing, truncated or unreadable file, an unknown suffix, or a `.bin`
      without torch installed.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise PretrainedError(f"{path}: no such weight file.")
  if path.endswith(".safetensors.index.json"):
    return _sharded(path)
  if path.endswith(".safetensors"):
    return _safetensors(path)
  if path.endswith(".npz"):
    return _npz(path)
  if path.endswith(TORCH_SUFFIXES):
    return _torch(path)
  raise PretrainedError(
    f"{path}: unknown weight file type; expected .safetensors, "
    f".safetensors.index.json, .npz or {'/'.join(TORCH_SUFFIXES)}."
  )


def save_safetensors(
  tensors: Mapping[str, np.ndarray],
  path: str | os.PathLike,
  *,
  metadata: Mapping[str, str] | None = None,
) -> None:
  """Writes `{key: array}` as one safetensors file (metadata `{"format": "pt"}` by default, which
  transformers expects)."""
  from safetensors.numpy import save_file

  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # np.require, not ascontiguousarray: that turns a 0-d array (a logit scale) into shape (1,).
  arrays = {k: np.require(v, requirements="C") for k, v in tensors.items()}
  save_file(arrays, path, metadata=dict(metadata or {"format": "pt"}))
