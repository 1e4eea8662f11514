"""Caption generation with the key/value cache against recomputing the whole prefix each step.

`models.generate(method="greedy")` feeds one token per step through the cached text tower and
decoder. The baseline is what open_clip's `CoCa.generate` does (without its Python loop): each
step runs the full teacher-forced forward pass over the whole `[batch, max_len]` sequence and
reads one position, inside the same kind of jitted `lax.while_loop`. Both decode the same tokens
(checked). Reported: the fastest wall time of one batch after compilation (of 9 runs; the CPU is
shared), and generated tokens per second.

    python experiments/generate_benchmark.py              # the recorded table
    python experiments/generate_benchmark.py --quick      # one length, 2 timed runs

Writes experiments/results/generate_benchmark.{json,md}. The numbers are for a shared 2-core
CPU with one device: compare rows with each other, not with accelerators.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import json
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from contrastive import models

RESULTS = pathlib.Path(__file__).parent / "results"
SOT, EOT, VOCAB = 1022, 1023, 1024


def make(max_len: int):
  cfg = models.model_config(
    image="nano/8", text="nano", image_size=32, vocab_size=VOCAB, max_len=max_len,
    embed_dim=64, decoder="nano",
  )  # fmt: skip
  cfg.decoder.pool_queries = 64
  model = models.make_model(cfg)
  init = jax.jit(lambda r: model.init(r, model.dummy_batch(1), train=False))
  params = nn.unbox(init(jax.random.key(0)))["params"]
  # No end or pad token (id 0): every row decodes all max_len - 1 steps in both methods.
  head = params["decoder"]["head"]["kernel"]
  params["decoder"]["head"]["kernel"] = head.at[:, jnp.array([0, EOT])].set(-100.0)
  return model, params


def no_cache_greedy(model, params, images, max_len):
  """Greedy decoding by the full forward pass at every step (no cache)."""

  def logits_at(tokens, t):
    _, extras = model.apply({"params": params}, {"image": images, "text": tokens}, train=False)
    return jax.lax.dynamic_index_in_dim(extras["caption_logits"], t - 1, axis=1, keepdims=False)

  def body(state):
    t, out = state
    token = jnp.argmax(logits_at(out, t), axis=-1).astype(jnp.int32)
    return t + 1, out.at[:, t].set(token)

  out = jnp.full((images.shape[0], max_len), SOT, jnp.int32)
  return jax.lax.while_loop(lambda s: s[0] < max_len, body, (jnp.int32(1), out))[1]


def timed(fn, repeats):
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times), result


def measure(max_len: int, batch: int, repeats: int) -> dict[str, float]:
  model, params = make(max_len)
  images = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
  baseline = jax.jit(lambda p, x: no_cache_greedy(model, p, x, max_len))
  t_cache, tokens = timed(
    lambda: models.generate(model, params, images, max_len=max_len, sot_id=SOT, eot_id=EOT),
    repeats,
  )
  t_full, reference = timed(lambda: baseline(params, images), repeats)
  np.testing.assert_array_equal(tokens, reference)
  generated = batch * (max_len - 1)
  return dict(
    max_len=max_len,
    batch=batch,
    cached_s=t_cache,
    full_forward_s=t_full,
    cached_tokens_per_s=generated / t_cache,
    full_forward_tokens_per_s=generated / t_full,
    speedup=t_full / t_cache,
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  lengths, repeats, batch = ([16], 2, 16) if args.quick else ([16, 32, 64], 9, 16)
  rows = []
  for max_len in lengths:
    rows.append(measure(max_len, batch, repeats))
    print(rows[-1], flush=True)
  name = "generate_benchmark" + ("_quick" if args.quick else "")
  RESULTS.mkdir(exist_ok=True)
  (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
  lines = [
    "# Caption generation: key/value cache vs. full forward per step",
    "",
    "`python experiments/generate_benchmark.py`: greedy decoding of a batch of "
    f"{batch} images with a `nano` CoCa (ViT nano/8 at 32 px, text tower and decoder `nano`, "
    "64 image tokens, vocabulary 1024), jitted, one CPU device of a shared 2-core machine; "
    "the fastest of 9 timed runs after compilation (the machine is shared). Both methods give "
    "the same tokens.",
    "",
    "| max_len | cached (ms) | full forward (ms) | cached tokens/s | full tokens/s | speed-up |",
    "| ------- | ----------- | ----------------- | --------------- | ------------- | -------- |",
  ]
  for r in rows:
    lines.append(
      f"| {r['max_len']} | {r['cached_s'] * 1e3:.0f} | {r['full_forward_s'] * 1e3:.0f} | "
      f"{r['cached_tokens_per_s']:.0f} | {r['full_forward_tokens_per_s']:.0f} | "
      f"{r['speedup']:.1f}x |"
    )
  (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
