"""The docstring examples of `contrastive.losses` run, and print what they say.

Each module's examples see its own names, and `jax` and `jnp` as the docstrings write them.
"""

import doctest
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import pytest

import contrastive.losses

MODULES = sorted(
  m.name for m in pkgutil.walk_packages(contrastive.losses.__path__, "contrastive.losses.")
)


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
  result = doctest.testmod(
    importlib.import_module(name),
    extraglobs={"jax": jax, "jnp": jnp},
    optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
  )
  assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_every_public_loss_has_an_example():
  finder = doctest.DocTestFinder()
  examples = {
    name: sum(len(t.examples) for t in finder.find(getattr(contrastive.losses, name)))
    for name in contrastive.losses.__all__
    if name.endswith("_loss")
  }
  assert [name for name, n in examples.items() if n == 0 and name != "ring_loss"] == []
