"""Transformer building blocks shared by the encoders: attention, MLP, pre-LN block, layer stack.

Every parameter is created through `nn.with_logical_partitioning` and the main activations pass
through `nn.with_logical_constraint`, with these logical axis names (mapped onto mesh axes by
`contrastive.parallel.LOGICAL_RULES`):

| name     | meaning                                             |
| -------- | --------------------------------------------------- |
| `batch`  | examples                                            |
| `length` | tokens or patches                                   |
| `embed`  | the residual stream (`width`)                       |
| `mlp`    | the MLP hidden units (`mlp_dim`)                    |
| `heads`  | attention heads                                     |
| `kv`     | the per-head dimension (`width // num_heads`)       |
| `vocab`  | token ids of the text embedding table               |
| `joint`  | the shared embedding space of the towers            |
| `layers` | the stacked layer axis of a scanned encoder         |

Parameters are float32 (`param_dtype`); matrix products run in `dtype` (e.g. bfloat16);
LayerNorm statistics and attention softmax are computed in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Activation = Literal["gelu", "gelu_tanh", "quick_gelu"]
RematPolicy = Literal["none", "full", "dots", "dots_no_batch"]


def quick_gelu(x: jax.Array) -> jax.Array:
  """`x * sigmoid(1.702 x)`, the activation of OpenAI's CLIP checkpoints."""
  return x * jax.nn.sigmoid(1.702 * x)


# name: activation. "gelu" is the exact (erf) GELU of PyTorch's nn.GELU and open_clip;
# "gelu_tanh" the tanh approximation that flax and big_vision use by default.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
  "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
  "quick_gelu": quick_gelu,
}

# name: what `jax.checkpoint` keeps from the forward pass of each block ("none": no remat).
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.dots_saveable,
  "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_choice(value: Any, table: dict[str, Any] | Sequence[str], *, what: str) -> None:
  """Raises a ValueError naming `value` and the known names unless `value` is in `table`."""
  if value not in table:
    raise ValueError(f"Unknown {what} {value!r}; known: {sorted(table)}.")


def check_rate(value: float, *, what: str) -> None:
  if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
    raise ValueError(f"{what} must be a float in [0, 1), got {value!r}.")


def partitioned(init: Callable[..., Any], names: tuple[str | None, ...]) -> Callable[..., Any]:
  """`init` whose result carries the logical axis `names` (one per parameter dimension)."""
  return nn.with_logical_partitioning(init, names)


def token_embedding(vocab_size: int, width: int, dtype: Dtype) -> nn.Embed:
  """The text towers' token table `embedding`, `[vocab, width]` float32, N(0, 0.02^2) (CLIP's);
  call it inside a compact method, whose submodule it becomes."""
  return nn.Embed(
    vocab_size,
    width,
    dtype=dtype,
    param_dtype=jnp.float32,
    name="embedding",
    embedding_init=partitioned(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
  )


def position_table(module: nn.Module, length: int, width: int) -> jax.Array:
  """`module`'s learned `pos_embedding`, `[length, width]` float32, N(0, 0.01^2) (CLIP's)."""
  return module.param(
    "pos_embedding",
    partitioned(nn.initializers.normal(stddev=0.01), (None, "embed")),
    (length, width),
    jnp.float32,
  )


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
  """Asks the partitioner to lay out activation `x` by logical axis `names`.

  A no-op unless logical axis rules (`nn.logical_axis_rules`) and a mesh (`jax.set_mesh`) are in
  context, so the same model runs unchanged on one device.
  """
  return nn.with_logical_constraint(x, names)


def layer_norm(*, dtype: Dtype, eps: float, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
    epsilon=eps,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
    scale_init=partitioned(nn.initializers.ones, ("embed",)),
    bias_init=partitioned(nn.initializers.zeros, ("embed",)),
  )


def drop_path(x: jax.Array, rate: float | jax.Array, rng: jax.Array) -> jax.Array:
  """Stochastic depth: zeroes a residual branch per example with probability `rate`.

  Args:
    x: `[batch, ...]` the branch's output.
    rate: the drop probability, a Python float or a traced scalar (scanned layers).
    rng: a PRNG key.

  Returns:
    `x` with each example kept and scaled by `1 / (1 - rate)`, or zeroed.
  """
  keep_prob = 1.0 - rate
  keep = jax.random.bernoulli(rng, keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros_like(x))


class MlpBlock(nn.Module):
  """Dense, activation, dropout, Dense: `[batch, (length,) embed] -> [batch, (length,) embed]`."""

  mlp_dim: int
  act: Activation = "gelu"
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    width = x.shape[-1]
    h = nn.Dense(
      self.mlp_dim,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name="fc1",
      kernel_init=partitioned(nn.initializers.xavier_uniform(), ("embed", "mlp")),
      bias_init=partitioned(nn.initializers.normal(1e-6), ("mlp",)),
    )(x)
    h = constrain(h, ("batch",) + ("length",) * (h.ndim - 2) + ("mlp",))
    h = ACTIVATIONS[self.act](h)
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    return nn.Dense(
      width,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name="fc2",
      kernel_init=partitioned(nn.initializers.xavier_uniform(), ("mlp", "embed")),
      bias_init=partitioned(nn.initializers.normal(1e-6), ("embed",)),
    )(h)


class DenseGeneral(nn.Module):
  """A linear map contracting the last `in_axes` input dimensions into `features`.

  Like `nn.DenseGeneral`, but it creates its kernel at full rank, so its logical partitioning
  (`kernel_names`, one name per kernel dimension) holds even when initialized under a mesh.
  """

  features: tuple[int, ...]
  kernel_names: tuple[str | None, ...]
  in_axes: int = 1
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`[..., *in_dims] -> [..., *features]`."""
    n_in = self.in_axes
    shape = tuple(x.shape[-n_in:]) + tuple(self.features)
    init = nn.initializers.xavier_uniform(
      in_axis=tuple(range(n_in)), out_axis=tuple(range(n_in, len(shape)))
    )
    kernel = self.param("kernel", partitioned(init, self.kernel_names), shape, jnp.float32)
    y = jnp.tensordot(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      axes=(tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))),
    )
    if self.use_bias:
      bias = self.param(
        "bias",
        partitioned(nn.initializers.zeros, self.kernel_names[n_in:]),
        tuple(self.features),
        jnp.float32,
      )
      y = y + bias.astype(self.dtype)
    return y


# Key/value caching of `Attention` for autoregressive decoding (the "cache" collection): None,
# "append" (self-attention: each call's keys and values are written at the cache index, which
# then advances) or "once" (cross-attention: computed from the context when one is given, and
# read back from the cache when the context is None).
Decode = Literal[None, "append", "once"]


class Attention(nn.Module):
  """Multi-head dot-product attention with separate query, key, value and output projections.

  The kernels are `[embed, heads, kv]` (query, key, value) and `[heads, kv, embed]` (out), the
  layout of big_vision and flax checkpoints; open_clip's fused `in_proj_weight` splits into the
  three.

  With `decode` set, the projected keys and values live in the `"cache"` collection (as flax's
  `MultiHeadDotProductAttention(decode=True)`): `init` sizes the cache from its inputs (the whole
  sequence, or the context), and each `apply(..., mutable=["cache"])` then attends to the cache.
  With `"append"` the caller's `mask` spans the cache (`[..., q_len, cache_len]`).
  """

  num_heads: int
  qkv_bias: bool = True
  dtype: Dtype = jnp.float32
  decode: Decode = None

  @nn.compact
  def __call__(
    self, x: jax.Array, kv: jax.Array | None, mask: jax.Array | None = None
  ) -> jax.Array:
    """Attends from `x` to `kv`.

    Args:
      x: `[batch, q_len, embed]` queries.
      kv: `[batch, kv_len, embed]` keys and values (None: the cached ones, `decode="once"`).
      mask: None, or a boolean array broadcastable to `[batch, heads, q_len, kv_len]`, True
        where attention is allowed.

    Returns:
      `[batch, q_len, embed]`.
    """
    width = x.shape[-1]
    head_dim = width // self.num_heads
    proj = functools.partial(
      DenseGeneral,
      features=(self.num_heads, head_dim),
      kernel_names=("embed", "heads", "kv"),
      use_bias=self.qkv_bias,
      dtype=self.dtype,
    )
    names = ("batch", "length", "heads", "kv")
    q = constrain(proj(name="query")(x), names)
    if kv is None and self.decode != "once":
      raise ValueError("Attention needs keys and values (kv) unless decode='once' caches them.")
    k = v = None
    if kv is not None:
      k = constrain(proj(name="key")(kv), names)
      v = constrain(proj(name="value")(kv), names)
    if self.decode is not None:
      k, v = self._cached(k, v)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / np.sqrt(head_dim).astype(np.float32)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    out = constrain(out, names)
    return DenseGeneral(
      features=(width,),
      kernel_names=("heads", "kv", "embed"),
      in_axes=2,
      dtype=self.dtype,
      name="out",
    )(out)

  def _cached(self, k: jax.Array | None, v: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The keys and values to attend to, `[batch, cache_len, heads, kv]`, updating the cache."""
    initialized = self.has_variable("cache", "cached_key")
    if k is None and not initialized:
      raise ValueError("Attention with decode='once' needs the context on its first call.")
    shape, dtype = (k.shape, k.dtype) if k is not None else (None, None)
    cached_k = self.variable("cache", "cached_key", jnp.zeros, shape, dtype)
    cached_v = self.variable("cache", "cached_value", jnp.zeros, shape, dtype)
    index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:  # init: the cache takes the shape of this call's keys and values
      return k, v
    if self.decode == "once":
      if k is not None:
        cached_k.value, cached_v.value = k, v
      return cached_k.value, cached_v.value
    start = (0, index.value, 0, 0)
    cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k.astype(dtype), start)
    cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v.astype(dtype), start)
    index.value = index.value + k.shape[1]
    return cached_k.value, cached_v.value


class EncoderBlock(nn.Module):
  """Pre-LayerNorm transformer block: `x + attn(LN(x))`, then `x + mlp(LN(x))`.

  Internal: called positionally as `(x, mask, drop_rate, train)` so that `nn.remat` can keep
  `train` static and `nn.scan` can broadcast it.
  """

  num_heads: int
  mlp_dim: int
  act: Activation = "gelu"
  dropout: float = 0.0
  norm_eps: float = 1e-6
  use_drop_path: bool = False
  dtype: Dtype = jnp.float32
  decode: Decode = None

  @nn.compact
  def __call__(
    self, x: jax.Array, mask: jax.Array | None, drop_rate: float | jax.Array, train: bool
  ) -> tuple[jax.Array, None]:
    """`[batch, length, embed] -> ([batch, length, embed], None)` (the scan's carry and output)."""
    x = constrain(x, ("batch", "length", "embed"))

    def residual(x, y):
      y = nn.Dropout(self.dropout)(y, deterministic=not train)
      if train and self.use_drop_path:
        y = drop_path(y, drop_rate, self.make_rng("dropout"))
      return x + y

    y = layer_norm(dtype=self.dtype, eps=self.norm_eps, name="norm1")(x)
    y = Attention(self.num_heads, dtype=self.dtype, decode=self.decode, name="attn")(y, y, mask)
    x = residual(x, y)
    y = layer_norm(dtype=self.dtype, eps=self.norm_eps, name="norm2")(x)
    y = MlpBlock(self.mlp_dim, act=self.act, dropout=self.dropout, dtype=self.dtype, name="mlp")(
      y, train=train
    )
    x = residual(x, y)
    return constrain(x, ("batch", "length", "embed")), None


class Encoder(nn.Module):
  """A stack of `depth` `EncoderBlock`s, unrolled or scanned, with optional remat.

  Unrolled, the blocks' parameters are `encoderblock_0`, ..., `encoderblock_{depth-1}`; scanned,
  one `encoderblock` whose leaves have a leading `[depth]` axis (logical name `layers`).
  `stack_layers` and `unstack_layers` convert between the two.

  Attributes:
    depth, num_heads, mlp_dim: the stack's size.
    act: the MLP activation, a key of `ACTIVATIONS`.
    dropout: dropout rate after the attention and MLP branches and inside the MLP.
    stoch_depth: the largest stochastic-depth rate; block `i` drops its branches with rate
      `stoch_depth * i / (depth - 1)` (linear, as in timm).
    remat: a key of `REMAT_POLICIES`; what each block keeps for the backward pass.
    scan: `nn.scan` over the blocks (one compiled block, fast compiles of deep models).
    norm_eps: LayerNorm epsilon.
    dtype: compute dtype.
    decode: the blocks' self-attention caches keys and values (`Attention`'s `"append"`).
  """

  depth: int
  num_heads: int
  mlp_dim: int
  act: Activation = "gelu"
  dropout: float = 0.0
  stoch_depth: float = 0.0
  remat: RematPolicy = "none"
  scan: bool = False
  norm_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool) -> jax.Array:
    """`[batch, length, embed] -> [batch, length, embed]`; `mask` as in `Attention`."""
    block_cls = EncoderBlock
    policy = REMAT_POLICIES[self.remat]
    if self.remat != "none":
      block_cls = nn.remat(
        EncoderBlock, prevent_cse=not self.scan, static_argnums=(4,), policy=policy
      )
    kwargs = dict(
      num_heads=self.num_heads,
      mlp_dim=self.mlp_dim,
      act=self.act,
      dropout=self.dropout,
      norm_eps=self.norm_eps,
      use_drop_path=self.stoch_depth > 0,
      dtype=self.dtype,
      decode="append" if self.decode else None,
    )
    rates = [self.stoch_depth * i / max(self.depth - 1, 1) for i in range(self.depth)]
    if self.scan:
      scanned = nn.scan(
        block_cls,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, 0, nn.broadcast),
        length=self.depth,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )
      x, _ = scanned(name="encoderblock", **kwargs)(x, mask, jnp.asarray(rates, jnp.float32), train)
    else:
      for i, rate in enumerate(rates):
        x, _ = block_cls(name=f"encoderblock_{i}", **kwargs)(x, mask, rate, train)
    return x


def stack_layers(params: Any, *, prefix: str = "encoderblock") -> Any:
  """Turns unrolled-layer parameters into the scanned layout, anywhere in a params pytree.

  Every dict holding `{prefix}_0`, ..., `{prefix}_{n-1}` gets one `{prefix}` entry instead, whose
  leaves stack the layers' leaves along a new leading axis.

  Args:
    params: a nested dict of arrays (unboxed).
    prefix: the block name used by `Encoder`.

  Returns:
    The same tree with every unrolled stack replaced by its scanned form.
  """
  if not isinstance(params, dict) and not hasattr(params, "items"):
    return params
  out, layers = {}, {}
  for key, value in params.items():
    head, _, index = key.rpartition("_")
    if head == prefix and index.isdigit():
      layers[int(index)] = value
    else:
      out[key] = stack_layers(value, prefix=prefix)
  if layers:
    if sorted(layers) != list(range(len(layers))):
      raise ValueError(f"Layers {sorted(layers)} of {prefix!r} are not numbered 0..n-1.")
    out[prefix] = jax.tree.map(lambda *xs: jnp.stack(xs), *[layers[i] for i in range(len(layers))])
  return out


def unstack_layers(params: Any, *, prefix: str = "encoderblock") -> Any:
  """The inverse of `stack_layers`: scanned `{prefix}` entries become `{prefix}_0`, ..."""
  if not isinstance(params, dict) and not hasattr(params, "items"):
    return params
  out = {}
  for key, value in params.items():
    if key == prefix:
      depth = jax.tree.leaves(value)[0].shape[0]
      for i in range(depth):
        out[f"{prefix}_{i}"] = jax.tree.map(lambda x, i=i: x[i], value)
    else:
      out[key] = unstack_layers(value, prefix=prefix)
  return out


class MAPHead(nn.Module):
  """Multi-head attention pooling (big_vision's `MAPHead`, Lee et al. 2019; used by SigLIP).

  A learned probe attends over the tokens, followed by a residual MLP on the pooled vector.
  """

  num_heads: int
  mlp_dim: int
  act: Activation = "gelu"
  norm_eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[batch, length, embed] -> [batch, embed]`."""
    width = x.shape[-1]
    probe = self.param(
      "probe",
      partitioned(nn.initializers.xavier_uniform(), (None, None, "embed")),
      (1, 1, width),
      jnp.float32,
    )
    probe = jnp.broadcast_to(probe, (x.shape[0], 1, width)).astype(x.dtype)
    x = Attention(self.num_heads, dtype=self.dtype, name="attn")(probe, x)
    y = layer_norm(dtype=self.dtype, eps=self.norm_eps, name="norm")(x)
    x = x + MlpBlock(self.mlp_dim, act=self.act, dtype=self.dtype, name="mlp")(y, train=train)
    return x[:, 0]


def validate_encoder_options(
  *, act: str, remat: str, dropout: float, stoch_depth: float, what: str
) -> None:
  """Checks the options every transformer encoder shares; messages start with `what`."""
  check_choice(act, ACTIVATIONS, what=f"{what} activation")
  check_choice(remat, REMAT_POLICIES, what=f"{what} remat policy")
  check_rate(dropout, what=f"{what} dropout")
  check_rate(stoch_depth, what=f"{what} stoch_depth")


def as_dtype(dtype: Dtype) -> jnp.dtype:
  """`"bfloat16"`, `jnp.bfloat16`, ... -> a numpy dtype, failing with the bad name."""
  try:
    return jnp.dtype(dtype)
  except TypeError as e:
    raise ValueError(f"Unknown dtype {dtype!r}; use e.g. 'float32' or 'bfloat16'.") from e
