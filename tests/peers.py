"""The peer libraries (torch, open_clip, transformers) for fixture scripts and live parity tests.

None of them is a test dependency: the default run compares against committed fixture files, and
the live comparisons skip when a peer is missing. open_clip imports torchvision at import time
(`FrozenBatchNorm2d` in `open_clip/utils.py`, the transforms in `transform.py`), and so does
timm, which builds open_clip's SigLIP image towers (`timm.data` imports datasets and
transforms, `timm.layers` `FrozenBatchNorm2d`). The registry's torchvision does not load beside
the CPU torch build (`operator torchvision::nms does not exist`), and transformers 5.x imports
torchvision whenever it is installed. So the peers' venv has no torchvision, and
`install_torchvision_stand_in` registers a stand-in: an import hook that answers every
`torchvision.*` module with a placeholder whose unknown attributes are inert classes (usable as
base classes, callable, with attributes of their own, such as `InterpolationMode.BICUBIC`), and
a working `FrozenBatchNorm2d`. That is enough to build open_clip's CLIP and SigLIP models
(`open_clip.create_model("ViT-B-16-SigLIP", pretrained=None)`) and its tokenizers. Image
transforms do nothing: the tests feed the models tensors directly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

_ROOT = "torchvision"


class _Inert(type):
  """Metaclass of the stand-in's placeholders: any attribute is another placeholder."""

  def __getattr__(cls, name):
    if name.startswith("__"):
      raise AttributeError(name)
    child = _placeholder(f"{cls.__name__}.{name}")
    setattr(cls, name, child)
    return child


def _placeholder(name: str) -> type:
  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __call__(self, x=None, *args, **kwargs):
    del args, kwargs
    return x

  return _Inert(name, (), {"__init__": __init__, "__call__": __call__})


class _StandInModule(types.ModuleType):
  """A `torchvision.*` module whose unknown attributes are placeholders (PEP 562 style)."""

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    value = _placeholder(name)
    setattr(self, name, value)
    return value


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Answers every `torchvision` and `torchvision.*` import with a `_StandInModule`."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname == _ROOT or fullname.startswith(_ROOT + "."):
      return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
    return None

  def create_module(self, spec):
    module = _StandInModule(spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module):
    del module


def _frozen_batch_norm():
  import torch  # the stand-in's classes derive from torch's

  class FrozenBatchNorm2d(torch.nn.Module):
    def __init__(self, num_features, eps=1e-5):
      super().__init__()
      for buffer, fill in (
        ("weight", 1.0),
        ("bias", 0.0),
        ("running_mean", 0.0),
        ("running_var", 1.0),
      ):
        self.register_buffer(buffer, torch.full((num_features,), fill))
      self.eps = eps

  return FrozenBatchNorm2d


def install_torchvision_stand_in() -> None:
  """Registers a stand-in `torchvision` unless a working one imports (see the module docstring)."""
  if _ROOT in sys.modules:
    return
  try:
    importlib.import_module(_ROOT)
    return
  except Exception:  # missing, or the broken registry build
    for name in [n for n in sys.modules if n == _ROOT or n.startswith(_ROOT + ".")]:
      del sys.modules[name]
  sys.meta_path.insert(0, _StandInFinder())
  misc = importlib.import_module(f"{_ROOT}.ops.misc")
  misc.FrozenBatchNorm2d = _frozen_batch_norm()
  root = sys.modules[_ROOT]
  root.__version__ = "0.0+stand-in"


def import_open_clip():
  """`open_clip`, importable without a working torchvision."""
  install_torchvision_stand_in()
  return importlib.import_module("open_clip")
