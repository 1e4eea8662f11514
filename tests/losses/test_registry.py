"""The registry: every loss's ring objective equals its registered dense reference, by name;
the table, and the modules that stay out of it."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive import parallel
from tests.losses import loss_testing as lt

B, D = 16, 8


def side_data(keys, seed=5):
  """What a trainer gives each side key: 3 hard negatives per pair, 4 examples per label."""
  rng = np.random.default_rng(seed)

  def unit(*shape):
    z = rng.standard_normal(shape).astype(np.float32)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)

  makers = {
    "neg_y": lambda: unit(B, 3, D),
    "frozen": lambda: unit(B, 6),
    "teacher_x": lambda: unit(B, 6),
    "teacher_y": lambda: unit(B, 6),
    "labels": lambda: (np.arange(B) // 4).astype(np.int32),
    "findings": lambda: (rng.uniform(size=(B, 5)) < 0.4).astype(np.float32),
    "mix_lambda": lambda: rng.uniform(size=B).astype(np.float32),
    "mix_partner": lambda: rng.permutation(B).astype(np.int32),
    "queue": lambda: unit(2 * B, D),
    "rng": lambda: jax.random.key(seed),
    "index": lambda: rng.permutation(10 * B)[:B].astype(np.int32),
    # iSogCLR's state rows: temperatures and log inner means of moderate size.
    **{k: lambda: rng.uniform(0.2, 0.5, B).astype(np.float32) for k in ("tau_x", "tau_y")},
    **{k: lambda: rng.uniform(0.0, 2.0, B).astype(np.float32) for k in ("log_u_x", "log_u_y")},
  }
  return {k: jnp.asarray(makers[k]()) for k in keys}


def test_every_loss_has_a_dense_reference():
  assert [n for n, o in losses.LOSSES.items() if o.reference is None] == []


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_ring_objective_equals_its_dense_reference(name):
  objective = losses.get(name)
  embeddings = lt.unit_embeddings(3, B, D, n=objective.modalities or 3)
  side = side_data(objective.side_keys)
  scale, bias = jnp.float32(6.0), jnp.float32(-3.0) if objective.uses_bias else None
  mesh = lt.sub_mesh(8)

  def ring(emb, s):
    fn = lambda e, side, s, axis_name: objective(
      e, s, bias, side, axis_name=axis_name, block_size=1
    )
    return parallel.shard_loss(fn, mesh)(emb, side, s)

  dense = lambda emb, s: objective.dense(emb, s, bias, side)
  got = jax.jit(jax.value_and_grad(ring, argnums=(0, 1)))(embeddings, scale)
  want = jax.value_and_grad(dense, argnums=(0, 1))(embeddings, scale)
  lt.assert_close(got, want, rtol=2e-5)


def test_the_table_is_keyed_by_the_objectives_names():
  assert [n for n, o in losses.LOSSES.items() if o.name != n] == []


def test_register_adds_a_new_name_only():
  objective = losses.Objective("registry_test", losses.LOSSES["softmax"].fn)
  try:
    assert losses.register(objective) is objective
    assert losses.get("registry_test") is objective
    with pytest.raises(ValueError, match="already registered"):
      losses.register(objective)
  finally:
    del losses.LOSSES["registry_test"]


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match="Unknown loss 'softmx'; known: .*softmax"):
    losses.get("softmx")


def _imports(path: pathlib.Path) -> set[str]:
  """The `contrastive.losses` modules a file imports (``from contrastive.losses import a`` counts
  as ``contrastive.losses.a``)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f"{node.module}.{a.name}" for a in node.names)
  return {n for n in names if n.startswith("contrastive.losses")}


LOSSES_DIR = pathlib.Path(losses.__file__).parent


def test_loss_modules_import_nothing_from_the_registry():
  importers = [
    p.name
    for p in LOSSES_DIR.glob("*.py")
    if p.name not in ("registry.py", "__init__.py")
    if any(n.startswith("contrastive.losses.registry") for n in _imports(p))
  ]
  assert importers == []


def test_references_import_only_references():
  imports = {p.name: _imports(p) for p in (LOSSES_DIR / "reference").glob("*.py")}
  outside = {
    name: sorted(n for n in found if not n.startswith("contrastive.losses.reference"))
    for name, found in imports.items()
  }
  assert {name: found for name, found in outside.items() if found} == {}
