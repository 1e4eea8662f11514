"""The docstring examples of `contrastive.losses` run, and print what they say.

`MODULES` lists the modules that hold examples; each must run at least one, with no failure, and
a module that gains examples must join the list (so none is skipped unseen). Each module's
examples see its own names, and `jax` and `jnp` as the docstrings write them.
"""

import doctest
import importlib
import pkgutil
import sys
import types

import jax
import jax.numpy as jnp
import pytest

import contrastive.losses

MODULES = (
  "contrastive.losses.align_uniform",
  "contrastive.losses.amcl",
  "contrastive.losses.auc",
  "contrastive.losses.cacr",
  "contrastive.losses.caption",
  "contrastive.losses.cmc",
  "contrastive.losses.dcl",
  "contrastive.losses.decoupled_uniformity",
  "contrastive.losses.focal",
  "contrastive.losses.gap_tools",
  "contrastive.losses.gram",
  "contrastive.losses.gram_itm",
  "contrastive.losses.hard_negative",
  "contrastive.losses.isogclr",
  "contrastive.losses.kernel",
  "contrastive.losses.macl",
  "contrastive.losses.mcl",
  "contrastive.losses.mochi",
  "contrastive.losses.moco",
  "contrastive.losses.multiview",
  "contrastive.losses.overlap",
  "contrastive.losses.poly_view",
  "contrastive.losses.sigmoid",
  "contrastive.losses.soft_target",
  "contrastive.losses.softmax",
  "contrastive.losses.supcon",
  "contrastive.losses.symile",
)


def _run_examples(name: str) -> doctest.TestResults:
  """Runs the examples of module `name`; fails unless at least one ran and none failed."""
  result = doctest.testmod(
    importlib.import_module(name),
    extraglobs={"jax": jax, "jnp": jnp},
    optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
  )
  assert result.attempted > 0, f"{name} has no example"
  assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
  return result


def _example_count(name: str) -> int:
  return sum(len(t.examples) for t in doctest.DocTestFinder().find(importlib.import_module(name)))


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
  _run_examples(name)


def test_a_module_without_examples_fails(monkeypatch):
  bare = types.ModuleType("contrastive.losses.bare", "A docstring without an example.")
  monkeypatch.setitem(sys.modules, bare.__name__, bare)
  with pytest.raises(AssertionError, match="contrastive.losses.bare has no example"):
    _run_examples(bare.__name__)


def test_every_module_with_examples_is_listed():
  names = [contrastive.losses.__name__] + [
    m.name for m in pkgutil.walk_packages(contrastive.losses.__path__, "contrastive.losses.")
  ]
  assert {name for name in names if _example_count(name)} == set(MODULES)


def test_every_public_loss_has_an_example():
  finder = doctest.DocTestFinder()
  examples = {
    name: sum(len(t.examples) for t in finder.find(getattr(contrastive.losses, name)))
    for name in contrastive.losses.__all__
    if name.endswith("_loss")
  }
  assert [name for name, n in examples.items() if n == 0 and name != "ring_loss"] == []
