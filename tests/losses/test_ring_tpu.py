"""The ring on the TPU compiler, with no TPU: the softmax and sigmoid rings compiled for v5e:2x2
(4 chips) send every block and every accumulator while tile compute runs, forward and backward;
``precision="highest"`` takes the similarity product out of bfloat16, and what bfloat16 does to
the loss is what experiments/results/ring_tpu.md reports."""

import json
import pathlib

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from contrastive import losses
from contrastive import parallel
from contrastive.losses import emulation
from contrastive.losses import overlap

RESULTS = pathlib.Path(__file__).parents[2] / "experiments" / "results" / "ring_tpu.json"
# One tile per hop (the local batch of 512 is below the block size): XLA flattens the tile loops
# there, so this is where the schedule has the least room to overlap.
B, D = 2048, 128


@pytest.fixture(scope="module")
def tpu_mesh():
  pytest.importorskip("libtpu")
  from jax.experimental import topologies

  devices = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2").devices
  return parallel.make_mesh(devices=devices)


def _compile(mesh, loss, *, backward, batch=B, block_size=None, precision=None):
  options = dict(block_size=block_size, precision=precision)
  if loss == "softmax":
    fn = lambda x, y, s, axis_name: losses.softmax_loss(x, y, s, axis_name=axis_name, **options)
  else:
    fn = lambda x, y, s, b, axis_name: losses.sigmoid_loss(
      x, y, s, b, axis_name=axis_name, **options
    )
  fn = parallel.shard_loss(fn, mesh)
  fn = jax.value_and_grad(fn, argnums=(0, 1)) if backward else fn
  array = jax.ShapeDtypeStruct((batch, D), jnp.float32, sharding=NamedSharding(mesh, P("data")))
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P()))
  scalars = [scalar] * (1 if loss == "softmax" else 2)
  return jax.jit(fn).lower(array, array, *scalars).compile()


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_every_transfer_overlaps_tile_compute(tpu_mesh, loss, backward):
  transfers = overlap.ring_transfers(_compile(tpu_mesh, loss, backward=backward).as_text())
  # The y block moves in every pass; the softmax's column statistics and the gradient
  # accumulators follow it.
  blocks = [t for t in transfers if f"[{B // 4},{D}]" in " ".join(t.arrays)]
  assert blocks, transfers
  assert len(transfers) >= (6 if loss == "softmax" else 2) * (2 if backward else 1)
  for t in transfers:
    assert t.is_async, t
    assert t.overlapped, t


def test_several_tiles_per_hop_overlap_too(tpu_mesh):
  transfers = overlap.ring_transfers(
    _compile(tpu_mesh, "softmax", backward=True, block_size=128).as_text()
  )
  assert all(t.is_async and t.overlapped for t in transfers), transfers
  # There the tile loops stay loops: each transfer waits on one.
  assert all(any(name.startswith("while") for name in t.overlapped) for t in transfers)


def test_ring_transfers_reads_a_synchronous_permute():
  hlo = """HloModule m, is_scheduled=true

ENTRY %main (p: f32[8,4]) -> f32[8,4] {
  %p = f32[8,4]{1,0} parameter(0)
  %d = f32[8,8]{1,0} dot(%p, %p), lhs_contracting_dims={1}, rhs_contracting_dims={1}
  ROOT %cp = f32[8,4]{1,0} collective-permute(%p), channel_id=1, source_target_pairs={{0,1},{1,0}}
}
"""
  (t,) = overlap.ring_transfers(hlo)
  assert (t.name, t.arrays, t.is_async, t.overlapped) == ("cp", ("f32[8,4]",), False, ())


def _similarity_dots(hlo_text):
  return [line for line in hlo_text.splitlines() if " convolution(" in line or " dot(" in line]


def test_default_precision_rounds_to_bf16_and_highest_does_not(tpu_mesh):
  default = _compile(tpu_mesh, "softmax", backward=False).as_text()
  assert any("= bf16[" in line and " convert(" in line for line in default.splitlines())
  assert all("operand_precision" not in line for line in _similarity_dots(default))

  highest = _compile(tpu_mesh, "softmax", backward=False, precision="highest").as_text()
  dots = _similarity_dots(highest)
  assert dots and all("operand_precision={highest,highest}" in line for line in dots)
  assert not any("= bf16[" in line and " convert(" in line for line in highest.splitlines())


def test_precision_names_are_checked():
  x = jnp.ones((4, 2))
  with pytest.raises(ValueError, match="'bf16'"):
    losses.softmax_loss(x, x, 1.0, precision="bf16")
  assert np.isfinite(
    float(losses.sigmoid_loss(x, x, 1.0, 0.0, precision=jax.lax.Precision.HIGHEST))
  )


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_bf16_products_change_the_loss_by_the_measured_amount(loss):
  from experiments import ring_tpu

  measured = next(
    r
    for r in json.loads(RESULTS.read_text())["precision"]
    if (r["loss"], r["batch"], r["dim"], r["scale"]) == (loss, 256, 256, 100.0)
  )
  with jax.enable_x64(True):
    x, y = (e.astype(jnp.float32) for e in ring_tpu.embeddings(0, 256, 256))
  scale = jnp.float32(100.0)
  if loss == "softmax":
    ring = losses.softmax_loss(x, y, scale, precision="highest")
    emulated = ring_tpu.dense_softmax(emulation.bf16_matmul, x, y, scale)
  else:
    ring = losses.sigmoid_loss(x, y, scale, -10.0, precision="highest")
    emulated = ring_tpu.dense_sigmoid(emulation.bf16_matmul, x, y, scale)
  # The float32 ring is the float64 value to float32's accuracy; bfloat16 operands move it by
  # the amount the study reports.
  np.testing.assert_allclose(
    float(ring), measured["value"], rtol=max(20 * measured["f32_loss_rel"], 1e-6)
  )
  np.testing.assert_allclose(
    abs(float(emulated) - float(ring)) / abs(float(ring)), measured["bf16_loss_rel"], rtol=0.05
  )
