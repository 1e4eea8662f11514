"""Caption generation for a model with a decoder (CoCa): greedy, beam search, top-k/top-p sampling.

```python
tokens = models.generate(model, params, images, max_len=32, method="beam", beam_size=4)
# [batch, max_len] int32: sot_id, the caption, eot_id, then pad_id
```

The image tower runs once; the text tower and the decoder then take one token per step, their
keys and values (and the decoder's projections of the image tokens) kept in a cache (flax's
`"cache"` collection: `decoder.CocaText` and `decoder.MultimodalDecoder` with `decode=True`),
so a step costs one position, not the whole prefix. The loop is a `jax.lax.while_loop` inside
one jitted function (compiled once per model and options), which stops when every row has ended.
A row ends at `eot_id` or `pad_id` (as open_clip's `CoCa.generate`); everything after is
`pad_id`.

- `"greedy"`: the most likely token at each step.
- `"sample"`: a draw from `softmax(logits / temperature)`, restricted to the `top_k` most likely
  tokens and/or to the smallest set whose probability reaches `top_p` (nucleus sampling).
- `"beam"`: `beam_size` hypotheses per image; each step keeps the `beam_size` best of their
  one-token extensions by `sum log p / length ** length_penalty` (length: generated tokens,
  the end token included); an ended hypothesis stays among the candidates with its score. With
  `beam_size=1` this is greedy decoding. (open_clip's default is a diverse group beam search of
  6 beams in 3 groups from transformers; this is the plain one.)

The start and end ids default to those of OpenAI CLIP's tokenizer (`<start_of_text>` 49406,
`<end_of_text>` 49407), as open_clip's `CoCa.generate` does; pass your tokenizer's.

References: Yu et al. 2022 (CoCa), https://arxiv.org/abs/2205.01917; Holtzman et al. 2020
(nucleus sampling), https://arxiv.org/abs/1904.09751.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.typing import ArrayLike

from contrastive import parallel
from contrastive.models.coca import CoCa

Method = Literal["greedy", "beam", "sample"]
METHODS = ("greedy", "beam", "sample")
SOT_ID, EOT_ID = 49406, 49407  # OpenAI CLIP's tokenizer (open_clip's CoCa.generate defaults)
_NEG = -1e9  # the log-probability of what a beam may not choose


@dataclasses.dataclass(frozen=True)
class _Options:
  max_len: int
  method: str
  beam_size: int
  top_k: int | None
  top_p: float | None
  temperature: float
  length_penalty: float
  sot_id: int
  eot_id: int
  pad_id: int
  mesh: Mesh | None


def _fail(message: str) -> None:
  raise ValueError(f"generate: {message}")


def _check(model: Any, images: Any, o: _Options, rng: Any) -> None:
  """One line per bad argument, before anything compiles."""
  if not getattr(model, "has_decoder", False) or not isinstance(model, CoCa):
    _fail(f"the model ({type(model).__name__}) has no captioning decoder (model.has_decoder).")
  if o.method not in METHODS:
    _fail(f"unknown method {o.method!r}; known: {list(METHODS)}.")
  vocab, text_len = model.decoder.vocab_size, model.text_encoder.max_len
  if isinstance(o.max_len, bool) or not isinstance(o.max_len, int) or not 2 <= o.max_len:
    _fail(f"max_len must be an int of at least 2, got {o.max_len!r}.")
  if o.max_len > text_len:
    _fail(f"max_len {o.max_len} is longer than the text tower's max_len {text_len}.")
  for name in ("sot_id", "eot_id", "pad_id"):
    value = getattr(o, name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab:
      _fail(f"{name} {value!r} is not a token id of the vocabulary of {vocab}; pass the ids of "
            f"the model's tokenizer.")  # fmt: skip
  if o.method == "beam":
    if isinstance(o.beam_size, bool) or not isinstance(o.beam_size, int):
      _fail(f"beam_size must be a positive int, got {o.beam_size!r}.")
    if not 1 <= o.beam_size <= vocab:
      _fail(f"beam_size must be in [1, {vocab}], got {o.beam_size}.")
  if o.method != "sample" and (o.top_k is not None or o.top_p is not None):
    _fail(f"top_k and top_p apply to method='sample', not {o.method!r}.")
  if o.top_k is not None and (
    isinstance(o.top_k, bool) or not isinstance(o.top_k, int) or not 1 <= o.top_k <= vocab
  ):
    _fail(f"top_k must be an int in [1, {vocab}] or None, got {o.top_k!r}.")
  if o.top_p is not None and not (isinstance(o.top_p, (int, float)) and 0 < o.top_p <= 1):
    _fail(f"top_p must be in (0, 1] or None, got {o.top_p!r}.")
  if not (isinstance(o.temperature, (int, float)) and o.temperature > 0):
    _fail(f"temperature must be a positive number, got {o.temperature!r}.")
  if o.method == "sample" and rng is None:
    _fail("method='sample' needs rng, a PRNG key.")
  if images.ndim != 4:
    _fail(f"images must be [batch, height, width, channels], got shape {images.shape}.")
  if o.mesh is not None and images.shape[0] % parallel.batch_shards(o.mesh):
    _fail(f"a batch of {images.shape[0]} does not split over the mesh's "
          f"{parallel.batch_shards(o.mesh)} batch shards.")  # fmt: skip


def generate(
  model: CoCa,
  params: Any,
  images: ArrayLike,
  *,
  max_len: int = 32,
  method: Method = "greedy",
  beam_size: int = 4,
  top_k: int | None = None,
  top_p: float | None = None,
  temperature: float = 1.0,
  length_penalty: float = 1.0,
  rng: jax.Array | None = None,
  sot_id: int = SOT_ID,
  eot_id: int = EOT_ID,
  pad_id: int = 0,
  mesh: Mesh | None = None,
) -> jax.Array:
  """Generates captions for `images`.

  Args:
    model: a model with a decoder (`model.has_decoder`, a `CoCa`).
    params: its parameters (`variables["params"]`).
    images: `[batch, H, W, 3]` floats, normalized as for `model.apply`.
    max_len: the length of the output, the start token included (at most the text tower's
      `max_len`).
    method: `"greedy"`, `"beam"` or `"sample"` (module docstring).
    beam_size: hypotheses per image for `"beam"`.
    top_k, top_p: for `"sample"`: keep the `top_k` most likely tokens, and/or the smallest set
      whose probability reaches `top_p`; None: no such restriction.
    temperature: for `"sample"`: the logits are divided by it first.
    length_penalty: for `"beam"`: the exponent of the length that divides a hypothesis' score.
    rng: a PRNG key, needed by `"sample"`.
    sot_id, eot_id, pad_id: the start, end and padding token ids.
    mesh: shard the batch over the mesh's batch axes (`parallel.batch_sharding`), the model's
      activations by its logical rules; the batch must divide into its batch shards.

  Returns:
    `[batch, max_len]` int32 token ids: `sot_id`, the generated tokens up to and with the end
    token, then `pad_id`.

  Raises:
    ValueError: one line naming a bad argument (a model without a decoder, an unknown method,
      an id outside the vocabulary, ...), before anything compiles.
  """
  options = _Options(
    max_len=max_len,
    method=method,
    beam_size=beam_size if method == "beam" else 1,
    top_k=top_k,
    top_p=top_p,
    temperature=temperature,
    length_penalty=float(length_penalty),
    sot_id=sot_id,
    eot_id=eot_id,
    pad_id=pad_id,
    mesh=mesh,
  )
  if not hasattr(images, "ndim"):
    images = jnp.asarray(images)
  _check(model, images, options, rng)
  rng = jax.random.key(0) if rng is None else rng
  if mesh is None:
    return _generate(params, images, rng, model=model, o=options)
  images = jax.device_put(images, parallel.batch_sharding(mesh))
  with parallel.use_rules(mesh):
    return _generate(params, images, rng, model=model, o=options)


@functools.partial(jax.jit, static_argnames=("model", "o"))
def _generate(params: Any, images: jax.Array, rng: jax.Array, *, model: CoCa, o: _Options):
  _, image_tokens = model.apply({"params": params}, images, method=CoCa.encode_image)
  rows = images.shape[0] * o.beam_size
  image_tokens = jnp.repeat(image_tokens, o.beam_size, axis=0)
  cache = _empty_cache(model, rows, o.max_len, image_tokens)

  def step(tokens, cache, context=None):
    logits, variables = model.apply(
      {"params": params, "cache": cache},
      tokens[:, None],
      context,
      method=CoCa.decode_step,
      mutable=["cache"],
    )
    return logits[:, -1], variables["cache"]

  first = jnp.full((rows,), o.sot_id, jnp.int32)
  logits, cache = step(first, cache, image_tokens)
  if o.method == "beam":
    axes = _batch_axes(model, image_tokens)
    tokens = _beam_search(step, logits, cache, images.shape[0], o, axes)
  else:
    tokens = _sample(step, logits, cache, rng, o)
  if o.mesh is not None:
    tokens = jax.lax.with_sharding_constraint(tokens, parallel.batch_sharding(o.mesh))
  return tokens


def _cache_shapes(model: CoCa, rows: int, length: int, image_tokens: jax.Array) -> Any:
  tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32)
  context = jax.ShapeDtypeStruct((rows, *image_tokens.shape[1:]), image_tokens.dtype)
  init = functools.partial(model.init, method=CoCa.decode_step)
  return jax.eval_shape(init, jax.random.key(0), tokens, context)["cache"]


def _empty_cache(model: CoCa, rows: int, length: int, image_tokens: jax.Array) -> Any:
  """The zero cache for `rows` sequences of `length` tokens (zeros are its initial state)."""
  shapes = _cache_shapes(model, rows, length, image_tokens)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _batch_axes(model: CoCa, image_tokens: jax.Array) -> Any:
  """Per cache leaf, the axis of its rows, the one that changes with their number, which beam
  search reorders; -1 for the step counters, and for the decoder's image keys and values (the
  `cross` blocks'), equal across the beams of an image."""
  a = _cache_shapes(model, 2, 2, image_tokens)
  b = _cache_shapes(model, 3, 2, image_tokens)

  def axis(path, x, y):
    if "cross" in jax.tree_util.keystr(path):
      return -1
    changed = [i for i, (m, n) in enumerate(zip(x.shape, y.shape)) if m != n]
    return changed[0] if changed else -1

  return jax.tree_util.tree_map_with_path(axis, a, b)


def _filter(logits: jax.Array, o: _Options) -> jax.Array:
  """`logits / temperature` with the tokens outside `top_k` and `top_p` at -inf."""
  logits = logits.astype(jnp.float32) / o.temperature
  if o.top_k is not None:
    kth = jax.lax.top_k(logits, o.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if o.top_p is not None:
    ordered = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # the mass of the more likely tokens
    threshold = jnp.min(jnp.where(before < o.top_p, ordered, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return logits


def _sample(step, logits, cache, rng, o: _Options) -> jax.Array:
  """Greedy decoding or sampling, one token per row and step."""
  rows = logits.shape[0]
  out = jnp.full((rows, o.max_len), o.pad_id, jnp.int32).at[:, 0].set(o.sot_id)
  done = jnp.zeros((rows,), bool)

  def cond(state):
    t, _, _, _, done = state
    return (t < o.max_len) & ~jnp.all(done)

  def body(state):
    t, out, logits, cache, done = state
    if o.method == "greedy":
      token = jnp.argmax(logits, axis=-1)
    else:
      token = jax.random.categorical(jax.random.fold_in(rng, t), _filter(logits, o), axis=-1)
    token = jnp.where(done, o.pad_id, token).astype(jnp.int32)
    out = out.at[:, t].set(token)
    done = done | (token == o.eot_id) | (token == o.pad_id)
    logits, cache = step(token, cache)
    return t + 1, out, logits, cache, done

  return jax.lax.while_loop(cond, body, (jnp.int32(1), out, logits, cache, done))[1]


def _beam_search(step, logits, cache, batch: int, o: _Options, batch_axes: Any) -> jax.Array:
  """Beam search over `beam_size` hypotheses per image; returns the best of each image's."""
  k, vocab = o.beam_size, logits.shape[-1]
  seqs = jnp.full((batch, k, o.max_len), o.pad_id, jnp.int32).at[:, :, 0].set(o.sot_id)
  scores = jnp.full((batch, k), _NEG, jnp.float32).at[:, 0].set(0.0)  # one live beam at first
  lengths = jnp.zeros((batch, k), jnp.int32)
  ended = jnp.zeros((batch, k), bool)
  pad_only = jnp.where(jnp.arange(vocab) == o.pad_id, 0.0, _NEG)

  def rank(scores, lengths):
    return scores / jnp.maximum(lengths, 1).astype(jnp.float32) ** o.length_penalty

  def cond(state):
    t, *_, ended = state
    return (t < o.max_len) & ~jnp.all(ended)

  def body(state):
    t, seqs, scores, lengths, logits, cache, ended = state
    logp = jax.nn.log_softmax(logits.astype(jnp.float32).reshape(batch, k, vocab), axis=-1)
    logp = jnp.where(ended[..., None], pad_only, logp)  # an ended hypothesis only pads
    total = (scores[..., None] + logp).reshape(batch, k * vocab)
    new_lengths = lengths + (~ended).astype(jnp.int32)
    ranked = rank(total.reshape(batch, k, vocab), new_lengths[..., None]).reshape(batch, -1)
    _, index = jax.lax.top_k(ranked, k)
    origin, token = index // vocab, (index % vocab).astype(jnp.int32)
    scores = jnp.take_along_axis(total, index, axis=1)
    lengths = jnp.take_along_axis(new_lengths, origin, axis=1)
    ended = jnp.take_along_axis(ended, origin, axis=1)
    token = jnp.where(ended, o.pad_id, token)
    ended = ended | (token == o.eot_id) | (token == o.pad_id)
    seqs = jnp.take_along_axis(seqs, origin[..., None], axis=1).at[:, :, t].set(token)
    rows = (jnp.arange(batch)[:, None] * k + origin).reshape(-1)
    cache = jax.tree.map(
      lambda x, axis: x if axis < 0 else jnp.take(x, rows, axis=axis), cache, batch_axes
    )
    logits, cache = step(token.reshape(-1), cache)
    return t + 1, seqs, scores, lengths, logits, cache, ended

  state = (jnp.int32(1), seqs, scores, lengths, logits, cache, ended)
  _, seqs, scores, lengths, *_ = jax.lax.while_loop(cond, body, state)
  best = jnp.argmax(rank(scores, lengths), axis=1)
  return jnp.take_along_axis(seqs, best[:, None, None], axis=1)[:, 0]
