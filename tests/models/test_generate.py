"""Tests for contrastive/models/generate.py: the key/value cache against the full forward, greedy
and beam search against brute force, sampling, the end and padding tokens, the mesh, errors."""

import functools
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import models
from contrastive import parallel

# The module (`models.generate` is the function).
generate_lib = importlib.import_module("contrastive.models.generate")

VOCAB, MAX_LEN, PAD, SOT, EOT = 32, 8, 0, 30, 31
IDS = dict(sot_id=SOT, eot_id=EOT, pad_id=PAD)


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


@functools.cache
def _model(scan=False):
  cfg = models.model_config(
    image="mu/8", text="mu", image_size=16, vocab_size=VOCAB, max_len=MAX_LEN, embed_dim=16,
    decoder="mu",
  )  # fmt: skip
  cfg.decoder.update(pool_queries=4, pool_heads=2, depth=2)
  cfg.scan = scan
  return models.make_model(cfg)


@functools.cache
def _params(scan=False):
  model = _model(scan)
  init = jax.jit(lambda r: model.init(r, model.dummy_batch(1), train=False))
  params = nn.unbox(init(key(0)))["params"]
  # Sharper logits than at init, so that the searches' choices are far from ties.
  head = params["decoder"]["head"]["kernel"]
  params["decoder"]["head"]["kernel"] = head * 8.0
  return params


def images(n=4, seed=1):
  return jax.random.normal(key(seed), (n, 16, 16, 3))


@functools.cache
def _full_logits_fn():
  model = _model()
  return jax.jit(
    lambda p, x, t: model.apply({"params": p}, {"image": x, "text": t}, train=False)[1][
      "caption_logits"
    ]
  )


def full_logits(params, x, tokens):
  return np.asarray(_full_logits_fn()(params, x, jnp.asarray(tokens, jnp.int32)))


@pytest.mark.parametrize("scan", [False, True])
def test_cached_decoding_equals_the_full_forward(scan):
  """Token by token through the cache, the logits equal the teacher-forced ones at every
  position, a pad id inside the text (open_clip's shifted mask) included."""
  model, params = _model(scan), _params(scan)
  x = images(3)
  tokens = np.array(
    [[SOT, 5, 9, 3, 7, 2, 11, EOT], [SOT, 4, PAD, 6, 8, 1, 2, EOT], [SOT, 7, 7, 7, 1, 2, 3, 4]],
    np.int32,
  )
  full = jax.jit(lambda b: model.apply({"params": params}, b, train=False)[1]["caption_logits"])
  want = np.asarray(full({"image": x, "text": tokens}))
  encode = jax.jit(lambda x: model.apply({"params": params}, x, method=models.CoCa.encode_image))
  _, image_tokens = encode(x)
  cache = generate_lib._empty_cache(model, 3, MAX_LEN, image_tokens)
  step = jax.jit(
    lambda c, t, ctx: model.apply(
      {"params": params, "cache": c}, t, ctx, method=models.CoCa.decode_step, mutable=["cache"]
    )
  )
  for t in range(MAX_LEN - 1):
    logits, variables = step(cache, tokens[:, t : t + 1], image_tokens if t == 0 else None)
    cache = variables["cache"]
    np.testing.assert_allclose(logits[:, 0], want[:, t], atol=2e-5, rtol=1e-5)


def reference_greedy(params, x, max_len):
  """Greedy decoding by the full forward pass, one position at a time (no cache)."""
  out = np.full((x.shape[0], max_len), PAD, np.int32)
  out[:, 0] = SOT
  done = np.zeros(x.shape[0], bool)
  for t in range(1, max_len):
    filled = out.copy()
    filled[:, t:] = SOT  # any ids: the logits at t - 1 do not see them
    token = full_logits(params, x, filled)[:, t - 1].argmax(-1)
    token = np.where(done, PAD, token)
    out[:, t] = token
    done |= (token == EOT) | (token == PAD)
  return out


def test_greedy_equals_the_full_forward_greedy():
  params, x = _params(), images()
  got = models.generate(_model(), params, x, max_len=MAX_LEN, **IDS)
  assert got.shape == (4, MAX_LEN) and got.dtype == jnp.int32
  np.testing.assert_array_equal(got, reference_greedy(params, x, MAX_LEN))


def test_beam_size_one_and_top_k_one_equal_greedy():
  params, x = _params(), images()
  greedy = models.generate(_model(), params, x, max_len=MAX_LEN, **IDS)
  beam = models.generate(_model(), params, x, max_len=MAX_LEN, method="beam", beam_size=1, **IDS)
  sample = models.generate(
    _model(), params, x, max_len=MAX_LEN, method="sample", top_k=1, rng=key(3), **IDS
  )
  tiny_p = models.generate(
    _model(), params, x, max_len=MAX_LEN, method="sample", top_p=1e-6, rng=key(4), **IDS
  )
  np.testing.assert_array_equal(beam, greedy)
  np.testing.assert_array_equal(sample, greedy)
  np.testing.assert_array_equal(tiny_p, greedy)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_over_every_pair_is_exhaustive(length_penalty):
  """With two tokens to generate and a beam as wide as the vocabulary, beam search returns the
  best of all `VOCAB**2` continuations (a first end or pad token ends the caption)."""
  params, x = _params(), images(2)
  got = models.generate(
    _model(), params, x, max_len=3, method="beam", beam_size=VOCAB,
    length_penalty=length_penalty, **IDS,
  )  # fmt: skip
  for row in range(2):
    xi = np.repeat(np.asarray(x[row : row + 1]), VOCAB, axis=0)
    firsts = np.arange(VOCAB, dtype=np.int32)
    tokens = np.stack([np.full(VOCAB, SOT), firsts, np.full(VOCAB, SOT)], axis=1)
    logp = jax.nn.log_softmax(full_logits(params, xi, tokens), axis=-1)
    first, second = np.asarray(logp[0, 0]), np.asarray(logp[:, 1])  # [V], [V, V]
    ends = (firsts == EOT) | (firsts == PAD)
    score = np.where(ends[:, None], -np.inf, (first[:, None] + second) / 2.0**length_penalty)
    best_pair = np.unravel_index(np.argmax(score), score.shape)
    best, value = [SOT, *best_pair], score[best_pair]
    if ends.any() and first[ends].max() > value:
      best = [SOT, int(firsts[ends][np.argmax(first[ends])]), PAD]
    np.testing.assert_array_equal(got[row], best)


def test_end_token_then_padding():
  """A decoder whose end-token logit dominates ends every caption at once; the rest is padding."""
  params = jax.tree.map(lambda a: a, _params())
  norm = params["decoder"]["norm"]
  norm["bias"] = jnp.ones_like(norm["bias"])  # the final LayerNorm's output then has mean 1
  params["decoder"]["head"]["kernel"] = params["decoder"]["head"]["kernel"].at[:, EOT].set(10.0)
  x = images()
  for kwargs in (dict(), dict(method="beam", beam_size=3)):
    got = models.generate(_model(), params, x, max_len=MAX_LEN, **IDS, **kwargs)
    want = np.full((4, MAX_LEN), PAD)
    want[:, 0], want[:, 1] = SOT, EOT
    np.testing.assert_array_equal(got, want)


def test_sampling_is_random_and_reproducible():
  params, x = _params(), images()
  run = lambda r: models.generate(
    _model(), params, x, max_len=MAX_LEN, method="sample", temperature=2.0, rng=r, **IDS
  )
  a, b, c = run(key(5)), run(key(5)), run(key(6))
  np.testing.assert_array_equal(a, b)
  assert (np.asarray(a) != np.asarray(c)).any()
  assert (np.asarray(a)[:, 0] == SOT).all()


def test_filter_keeps_top_k_and_the_nucleus():
  logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
  options = lambda **kw: generate_lib._Options(
    max_len=4, method="sample", beam_size=1, temperature=1.0, length_penalty=1.0,
    sot_id=1, eot_id=2, pad_id=0, mesh=None, **{"top_k": None, "top_p": None, **kw},
  )  # fmt: skip
  kept = lambda **kw: np.isfinite(generate_lib._filter(logits, options(**kw)))[0].tolist()
  assert kept(top_k=2) == [True, True, False, False, False]
  assert kept(top_p=0.5) == [True, False, False, False, False]
  assert kept(top_p=0.6) == [True, True, False, False, False]
  assert kept(top_p=0.8) == [True, True, True, False, False]
  assert kept(top_p=1.0) == [True] * 5
  assert kept(top_k=3, top_p=0.9) == [True, True, True, False, False]


def test_generate_on_the_mesh_equals_one_device():
  params, x = _params(), images(8)
  mesh = parallel.make_mesh(data=4, fsdp=2)
  want = models.generate(_model(), params, x, max_len=MAX_LEN, **IDS)
  got = models.generate(_model(), params, x, max_len=MAX_LEN, mesh=mesh, **IDS)
  assert got.sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(method="nucleus"), "unknown method 'nucleus'"),
    (dict(sot_id=49406), "sot_id 49406 is not a token id of the vocabulary of 32"),
    (dict(max_len=MAX_LEN + 1), "max_len 9 is longer than the text tower's max_len 8"),
    (dict(max_len=1), "max_len must be an int of at least 2"),
    (dict(method="sample"), "method='sample' needs rng"),
    (dict(top_k=3), "top_k and top_p apply to method='sample'"),
    (dict(method="sample", top_p=1.5, rng=key(0)), "top_p must be in"),
    (dict(method="beam", beam_size=0), "beam_size must be in"),
    (dict(temperature=0.0), "temperature must be a positive number"),
    (dict(mesh=parallel.make_mesh()), "a batch of 4 does not split over the mesh's 8"),
  ],
)
def test_bad_arguments_give_one_line(kwargs, message):
  kwargs = {**IDS, "max_len": MAX_LEN, **kwargs}
  with pytest.raises(ValueError, match=message) as info:
    models.generate(_model(), _params(), images(), **kwargs)
  assert "\n" not in str(info.value)


def test_a_model_without_a_decoder():
  model = models.make_model(models.model_config(image_size=16))
  with pytest.raises(ValueError, match="has no captioning decoder"):
    models.generate(model, {}, images(), **IDS)


def test_beam_search_reorders_the_text_caches_not_the_image_ones():
  model = _model()
  context = jnp.zeros((2, 3, 16))
  axes = jax.tree_util.tree_leaves_with_path(generate_lib._batch_axes(model, context))
  axes = {jax.tree_util.keystr(path): axis for path, axis in axes}
  assert axes["['decoder']['layer_0']['self']['attn']['cached_key']"] == 0
  assert axes["['decoder']['layer_0']['cross']['attn']['cached_key']"] == -1
  assert axes["['decoder']['index']"] == -1
  assert axes["['text']['encoder']['key_pad']"] == 0
  scanned = generate_lib._batch_axes(_model(scan=True), context)
  assert scanned["decoder"]["layer"]["self"]["attn"]["cached_value"] == 1  # [depth, rows, ...]
