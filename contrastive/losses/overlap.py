"""Whether a compiled ring overlaps its transfers with its tiles, read from the scheduled HLO.

An optimized HLO module (``jax.jit(f).lower(...).compile().as_text()``) lists each computation's
instructions in the order they run. An asynchronous transfer is a ``collective-permute-start``
and its ``collective-permute-done``; whatever runs between the two runs while the data moves. A
synchronous ``collective-permute`` overlaps nothing. :func:`ring_transfers` lists every
collective-permute of a module with the tile compute scheduled inside it: an instruction that
computes a similarity tile (a dot or convolution, or a fusion or loop containing one) or works on
one (an operand or result of a tile's shape, which the module's dots define).

Pass it ``jax.jit(loss_fn).lower(*abstract_args).compile().as_text()``, as
``tests/losses/test_ring_tpu.py`` does for ``v5e:2x2``; on a module written out:

  >>> hlo = '''ENTRY %main (p: f32[8,4]) -> f32[8,4] {
  ...   %p = f32[8,4]{1,0} parameter(0)
  ...   %start = (f32[8,4], f32[8,4]) collective-permute-start(%p), source_target_pairs={{0,1}}
  ...   %tile = f32[8,8]{1,0} dot(%p, %p), lhs_contracting_dims={1}, rhs_contracting_dims={1}
  ...   ROOT %done = f32[8,4]{1,0} collective-permute-done(%start)
  ... }'''
  >>> [(t.name, t.arrays, t.is_async, t.overlapped) for t in ring_transfers(hlo)]
  [('start', ('f32[8,4]',), True, ('tile',))]
"""

from __future__ import annotations

import dataclasses
import re

_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .* \{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([\w\-]+)\((.*)$")
_CALLED = re.compile(r"(?:calls|body|condition|to_apply|branch_computations)=\{?([^}\s]*)")
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_COMPUTE_OPS = ("fusion", "while", "call", "conditional", "dot", "convolution")


@dataclasses.dataclass(frozen=True)
class Transfer:
  """One collective-permute of a compiled module, and what is scheduled while it moves."""

  name: str  # the collective-permute or collective-permute-start instruction
  computation: str  # the computation it is in: the entry, or a loop body
  arrays: tuple[str, ...]  # what it moves, as "dtype[dims]"
  is_async: bool  # a start/done pair rather than one synchronous instruction
  overlapped: tuple[str, ...]  # the tile compute between its start and its done


@dataclasses.dataclass(frozen=True)
class _Instruction:
  name: str
  op: str
  arrays: tuple[str, ...]  # the result's arrays, "dtype[dims]" (several for a tuple)
  operands: tuple[str, ...]
  called: tuple[str, ...]  # computations it calls (fusions, loop bodies, reducers)


def ring_transfers(hlo_text: str) -> list[Transfer]:
  """Every collective-permute of the scheduled HLO module `hlo_text`, in program order."""
  computations = _parse(hlo_text)
  contains_dot = _dot_finder(computations)
  tile_arrays = {
    a
    for body in computations.values()
    for i in body
    if i.op in ("dot", "convolution")
    for a in i.arrays
  }
  transfers = []
  for computation, body in computations.items():
    arrays_of = {i.name: i.arrays for i in body}

    def is_tile_compute(i: _Instruction, arrays_of=arrays_of) -> bool:
      if i.op not in _COMPUTE_OPS:
        return False
      touched = set(i.arrays).union(*(arrays_of.get(o, ()) for o in i.operands))
      return (
        i.op in ("dot", "convolution")
        or any(contains_dot(c) for c in i.called)
        or bool(touched & tile_arrays)
      )

    for k, i in enumerate(body):
      if i.op == "collective-permute":
        transfers.append(Transfer(i.name, computation, i.arrays, False, ()))
      elif i.op == "collective-permute-start":
        done = next(
          j
          for j in range(k + 1, len(body))
          if body[j].op == "collective-permute-done" and i.name in body[j].operands
        )
        between = tuple(b.name for b in body[k + 1 : done] if is_tile_compute(b))
        transfers.append(Transfer(i.name, computation, arrays_of[body[done].name], True, between))
  return transfers


def _parse(hlo_text: str) -> dict[str, list[_Instruction]]:
  computations: dict[str, list[_Instruction]] = {}
  body = None
  for line in hlo_text.splitlines():
    header = _HEADER.match(line)
    if header:
      body = computations.setdefault(header.group(1), [])
    elif line.startswith("}"):
      body = None
    elif body is not None and (m := _INSTRUCTION.match(line)):
      name, shape, op, rest = m.groups()
      operand_text = rest.split("), ")[0]
      called = tuple(
        c.lstrip("%") for group in _CALLED.findall(rest) for c in group.split(",") if c
      )
      body.append(
        _Instruction(
          name=name,
          op=op,
          arrays=tuple(f"{t}[{d}]" for t, d in _ARRAY.findall(shape)),
          operands=tuple(re.findall(r"%([\w.\-]+)", operand_text)),
          called=called,
        )
      )
  return computations


def _dot_finder(computations: dict[str, list[_Instruction]]):
  memo: dict[str, bool] = {}

  def contains_dot(name: str) -> bool:
    if name not in memo:
      memo[name] = False  # a guard against cycles; HLO has none
      memo[name] = any(
        i.op in ("dot", "convolution") or any(contains_dot(c) for c in i.called)
        for i in computations.get(name, ())
      )
    return memo[name]

  return contains_dot
