"""The causal text side of CoCa: the unimodal text tower and the multimodal decoder.

As open_clip implements CoCa (`open_clip/transformer.py`: `TextTransformer` with `embed_cls`,
`MultimodalTransformer`), so that its weights map onto these modules one to one:

- `CocaText`: token and position embeddings, a learned class token *appended* after the text,
  causal pre-LayerNorm blocks, then the final LayerNorm on the class token's output (the pooled
  text vector). Its token outputs `[batch, seq_len, width]` (without the class token and without
  the final LayerNorm) feed the decoder.
- `MultimodalDecoder`: `depth` layers, each a causal self-attention block followed by a block
  that cross-attends to the image tokens, `x + attn(LN(x), LN_kv(image))` then
  `x + mlp(LN(x))`; a final LayerNorm and a bias-free projection to the vocabulary.

Padding in `CocaText` follows open_clip's default (`correct_cls_mask=False`, the layout its CoCa
weights were trained with): key `j` of the sequence `[tokens..., cls]` is masked when token
`j - 1` is padding (key 0 never is), so the mask is shifted by one position;
`correct_cls_mask=True` masks key `j` when token `j` is padding and never the class token.
The decoder masks no padding, only the future, as open_clip's.

Both modules take `decode=True` for generation: the self-attention keys and values (and the
decoder's projected image keys and values) live in the `"cache"` collection, one token (or a
few) is fed per call, and the outputs equal the full forward's position by position
(`contrastive.models.generate`).

Reference: Yu et al., "CoCa: Contrastive Captioners are Image-Text Foundation Models",
https://arxiv.org/abs/2205.01917.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from contrastive.models import layers
from contrastive.models import sizes


def _check_ints(module: nn.Module, *fields: str) -> None:
  for field in fields:
    value = getattr(module, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{type(module).__name__} needs {field}, a positive int; got {value!r}.")


def _dims(module: nn.Module) -> dict[str, int]:
  base = sizes.decode_text_variant(module.variant) if module.variant is not None else None
  return sizes.resolve_size(
    base,
    dict(
      width=module.width, depth=module.depth, mlp_dim=module.mlp_dim, num_heads=module.num_heads
    ),
    what=f"{type(module).__name__} {module.variant or ''}".rstrip(),
  )


class CocaText(nn.Module):
  """CoCa's unimodal text tower: `[batch, seq_len]` ids to `[batch, width]` (the class token).

  Attributes:
    variant: a size name of `sizes.TEXT_SIZES` (`"CLIP-B"` for CoCa ViT-B/32); None to give
      every dimension.
    width, depth, mlp_dim, num_heads: override the variant's dimensions.
    vocab_size: rows of the token embedding table (required).
    max_len: the longest text (open_clip's `context_length`); the position table has
      `max_len + 1` rows, the last for the class token.
    pad_id: the padding token id.
    correct_cls_mask: the padding mask of open_clip's `correct_cls_mask` (module docstring).
    act, dropout, stoch_depth, remat, scan, norm_eps: see `layers.Encoder`.
    dtype: compute dtype (parameters stay float32).
  """

  variant: str | None = None
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  vocab_size: int | None = None
  max_len: int | None = None
  pad_id: int = 0
  correct_cls_mask: bool = False
  act: layers.Activation = "gelu"
  dropout: float = 0.0
  stoch_depth: float = 0.0
  remat: layers.RematPolicy = "none"
  scan: bool = False
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self):
    self.dims  # noqa: B018  (validates the size)
    _check_ints(self, "vocab_size", "max_len")
    layers.validate_encoder_options(
      act=self.act,
      remat=self.remat,
      dropout=self.dropout,
      stoch_depth=self.stoch_depth,
      what="CocaText",
    )
    layers.as_dtype(self.dtype)
    super().__post_init__()

  @property
  def dims(self) -> dict[str, int]:
    """The resolved `width`, `depth`, `mlp_dim` and `num_heads`."""
    return _dims(self)

  def dummy_input(self, batch_size: int) -> jax.ShapeDtypeStruct:
    """The shape and dtype of a batch of inputs, for `init` and `eval_shape`."""
    return jax.ShapeDtypeStruct((batch_size, self.max_len), jnp.int32)

  @nn.compact
  def __call__(
    self, tokens: ArrayLike, *, train: bool, decode: bool = False
  ) -> tuple[jax.Array | None, dict[str, jax.Array]]:
    """Encodes token ids.

    Args:
      tokens: `[batch, seq_len]` int ids, `seq_len <= max_len`, right-padded with `pad_id`.
        With `decode`, the next `seq_len` tokens after those already cached.
      train: enables dropout and stochastic depth (which need a `"dropout"` rng).
      decode: feed the tokens to the key/value cache (no class token, no pooled output).

    Returns:
      `(pooled, aux)`: `pooled` `[batch, width]` (None with `decode`), the class token's output
      after the final LayerNorm; `aux["tokens"]` `[batch, seq_len, width]`, the tokens' outputs.
    """
    dims = self.dims
    dtype = layers.as_dtype(self.dtype)
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(
        f"CocaText expects int token ids of shape [batch, seq_len], got {tokens.dtype} of "
        f"shape {tokens.shape}."
      )
    batch, seq_len = tokens.shape
    if seq_len > self.max_len:
      raise ValueError(f"Text of length {seq_len} is longer than max_len={self.max_len}.")
    width = dims["width"]
    tokens = layers.constrain(tokens, ("batch", "length"))
    x = layers.token_embedding(self.vocab_size, width, dtype)(tokens)
    pos = layers.position_table(self, self.max_len + 1, width)
    is_pad = tokens == self.pad_id
    if decode:
      x, mask = self._decode_inputs(x, pos, is_pad)
    else:
      cls = self.param(
        "cls", layers.partitioned(nn.initializers.normal(stddev=0.01), ("embed",)), (width,)
      )
      x = jnp.concatenate([x, jnp.broadcast_to(cls.astype(dtype), (batch, 1, width))], axis=1)
      x = x + pos[None, : seq_len + 1].astype(dtype)
      no_pad = jnp.zeros((batch, 1), bool)
      key_pad = jnp.concatenate(
        [is_pad, no_pad] if self.correct_cls_mask else [no_pad, is_pad], axis=1
      )
      causal = jnp.tril(jnp.ones((seq_len + 1, seq_len + 1), bool))
      mask = ~key_pad[:, None, None, :] & causal[None, None]
    x = layers.constrain(x, ("batch", "length", "embed"))
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = layers.Encoder(
      depth=dims["depth"],
      num_heads=dims["num_heads"],
      mlp_dim=dims["mlp_dim"],
      act=self.act,
      dropout=self.dropout,
      stoch_depth=self.stoch_depth,
      remat=self.remat,
      scan=self.scan,
      norm_eps=self.norm_eps,
      dtype=dtype,
      decode=decode,
      name="transformer",
    )(x, mask, train=train)
    if decode:
      return None, {"tokens": x}
    pooled = layers.layer_norm(dtype=dtype, eps=self.norm_eps, name="norm")(x[:, -1])
    pooled = layers.constrain(pooled, ("batch", "embed"))
    return pooled, {"tokens": x[:, :-1]}

  def _decode_inputs(
    self, x: jax.Array, pos: jax.Array, is_pad: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """Position embeddings and the `[batch, 1, seq_len, cache_len]` mask of a decoding call.

    The cache remembers, per position, whether the key is masked as padding, and whether the
    last token fed was padding (open_clip's shifted mask reads the previous token).
    """
    batch, seq_len = is_pad.shape
    initialized = self.has_variable("cache", "index")
    index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    key_pad = self.variable("cache", "key_pad", jnp.zeros, is_pad.shape, bool)
    last_pad = self.variable("cache", "last_pad", jnp.zeros, (batch, 1), bool)
    start = index.value if initialized else jnp.zeros((), jnp.int32)
    if self.correct_cls_mask:
      pad = is_pad
    else:
      pad = jnp.concatenate([last_pad.value, is_pad[:, :-1]], axis=1)
    x = x + jax.lax.dynamic_slice_in_dim(pos, start, seq_len).astype(x.dtype)[None]
    if initialized:
      key_pad.value = jax.lax.dynamic_update_slice(key_pad.value, pad, (0, start))
      last_pad.value = is_pad[:, -1:]
      index.value = start + seq_len
      keys = key_pad.value
    else:
      keys = pad
    cache_len = keys.shape[1]
    causal = jnp.arange(cache_len)[None, :] <= start + jnp.arange(seq_len)[:, None]
    return x, ~keys[:, None, None, :] & causal[None, None]


class CrossAttentionBlock(nn.Module):
  """`x + attn(LN(x), LN_kv(context))`, then `x + mlp(LN(x))` (open_clip's cross-attention
  `ResidualAttentionBlock`). Internal: positional `(x, context, train)` for remat and scan."""

  num_heads: int
  mlp_dim: int
  act: layers.Activation = "gelu"
  dropout: float = 0.0
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None, train: bool) -> jax.Array:
    """`[batch, length, embed]`, `[batch, ctx_len, ctx_dim]` (None: cached) -> like `x`."""
    norm = lambda name: layers.layer_norm(dtype=self.dtype, eps=self.norm_eps, name=name)
    drop = nn.Dropout(self.dropout)
    y = norm("norm1")(x)
    kv = norm("norm_kv")(context) if context is not None else None
    decode = "once" if self.decode else None
    y = layers.Attention(self.num_heads, dtype=self.dtype, decode=decode, name="attn")(y, kv)
    x = x + drop(y, deterministic=not train)
    y = layers.MlpBlock(
      self.mlp_dim, act=self.act, dropout=self.dropout, dtype=self.dtype, name="mlp"
    )(norm("norm2")(x), train=train)
    x = x + drop(y, deterministic=not train)
    return layers.constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  """One multimodal layer: a causal self-attention block (`self`), then `cross`.

  Internal: called positionally as `(x, context, mask, train)`, returning `(x, None)`, so that
  `nn.remat` keeps `train` static and `nn.scan` carries `x`.
  """

  num_heads: int
  mlp_dim: int
  act: layers.Activation = "gelu"
  dropout: float = 0.0
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  decode: bool = False

  @nn.compact
  def __call__(
    self, x: jax.Array, context: jax.Array | None, mask: jax.Array, train: bool
  ) -> tuple[jax.Array, None]:
    kwargs = dict(
      num_heads=self.num_heads,
      mlp_dim=self.mlp_dim,
      act=self.act,
      dropout=self.dropout,
      norm_eps=self.norm_eps,
      dtype=self.dtype,
    )
    decode = "append" if self.decode else None
    x, _ = layers.EncoderBlock(**kwargs, decode=decode, name="self")(x, mask, 0.0, train)
    x = CrossAttentionBlock(**kwargs, decode=self.decode, name="cross")(x, context, train)
    return x, None


class MultimodalDecoder(nn.Module):
  """CoCa's multimodal text decoder: text token outputs and image tokens to vocabulary logits.

  Parameters: `layer_0` ... `layer_{depth-1}` (each `self`: `norm1`, `attn`, `norm2`, `mlp`;
  `cross`: `norm1`, `norm_kv`, `attn`, `norm2`, `mlp`), or one scanned `layer`; `norm`; `head`
  (`[width, vocab_size]`, no bias).

  Attributes:
    variant: a size name of `sizes.TEXT_SIZES` (`"CLIP-B"` is CoCa ViT-B/32's decoder,
      `"CLIP-L"` ViT-L/14's); None to give every dimension.
    width, depth, mlp_dim, num_heads: override the variant's dimensions; `width` must equal
      the text tower's.
    vocab_size: the logits' size (required).
    max_len: the longest text (open_clip's `context_length`; the decoder itself has no
      position table).
    act, dropout, remat, scan, norm_eps: see `layers.Encoder`.
    dtype: compute dtype (parameters and logits stay float32).
  """

  variant: str | None = None
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  vocab_size: int | None = None
  max_len: int | None = None
  act: layers.Activation = "gelu"
  dropout: float = 0.0
  remat: layers.RematPolicy = "none"
  scan: bool = False
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self):
    self.dims  # noqa: B018  (validates the size)
    _check_ints(self, "vocab_size", "max_len")
    layers.validate_encoder_options(
      act=self.act, remat=self.remat, dropout=self.dropout, stoch_depth=0.0, what="Decoder"
    )
    layers.as_dtype(self.dtype)
    super().__post_init__()

  @property
  def dims(self) -> dict[str, int]:
    """The resolved `width`, `depth`, `mlp_dim` and `num_heads`."""
    return _dims(self)

  @nn.compact
  def __call__(
    self, x: jax.Array, context: jax.Array | None, *, train: bool, decode: bool = False
  ) -> jax.Array:
    """Logits of the next token at every position.

    .. math:: h = \\mathrm{LN}(\\mathrm{layers}(x, c)), \\quad \\mathrm{logits} = h W

    Args:
      x: `[batch, seq_len, width]` the text tower's token outputs.
      context: `[batch, ctx_len, ctx_dim]` the image tokens (None with `decode` after the first
        call: the cached ones).
      train: enables dropout (which needs a `"dropout"` rng).
      decode: feed `x` to the key/value cache (positions after those already cached).

    Returns:
      `[batch, seq_len, vocab_size]` float32 logits.
    """
    dims = self.dims
    dtype = layers.as_dtype(self.dtype)
    if x.shape[-1] != dims["width"]:
      raise ValueError(
        f"The decoder of width {dims['width']} got text tokens of width {x.shape[-1]}; the "
        f"decoder's width must equal the text tower's."
      )
    x = layers.constrain(x.astype(dtype), ("batch", "length", "embed"))
    if context is not None:
      context = layers.constrain(context.astype(dtype), ("batch", "length", "embed"))
    mask = self._mask(x.shape[1], decode)
    layer_cls = DecoderLayer
    if self.remat != "none":
      layer_cls = nn.remat(
        DecoderLayer,
        prevent_cse=not self.scan,
        static_argnums=(4,),
        policy=layers.REMAT_POLICIES[self.remat],
      )
    kwargs = dict(
      num_heads=dims["num_heads"],
      mlp_dim=dims["mlp_dim"],
      act=self.act,
      dropout=self.dropout,
      norm_eps=self.norm_eps,
      dtype=dtype,
      decode=decode,
    )
    if self.scan:
      scanned = nn.scan(
        layer_cls,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
        length=dims["depth"],
        metadata_params={nn.PARTITION_NAME: "layers"},
      )
      x, _ = scanned(name="layer", **kwargs)(x, context, mask, train)
    else:
      for i in range(dims["depth"]):
        x, _ = layer_cls(name=f"layer_{i}", **kwargs)(x, context, mask, train)
    x = layers.layer_norm(dtype=dtype, eps=self.norm_eps, name="norm")(x)
    logits = nn.Dense(
      self.vocab_size,
      use_bias=False,
      dtype=dtype,
      param_dtype=jnp.float32,
      name="head",
      kernel_init=layers.partitioned(
        nn.initializers.normal(stddev=dims["width"] ** -0.5), ("embed", "vocab")
      ),
    )(x)
    return layers.constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))

  def _mask(self, seq_len: int, decode: bool) -> jax.Array:
    """The causal mask `[1, 1, seq_len, keys]`; with `decode`, over the cache."""
    if not decode:
      return jnp.tril(jnp.ones((seq_len, seq_len), bool))[None, None]
    initialized = self.has_variable("cache", "index")
    index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    length = self.variable("cache", "length", lambda: jnp.zeros((seq_len,), bool))
    if not initialized:  # init: the cache spans this call's positions
      return jnp.tril(jnp.ones((seq_len, seq_len), bool))[None, None]
    start = index.value
    index.value = start + seq_len
    keys = jnp.arange(length.value.shape[0])
    return (keys[None, :] <= start + jnp.arange(seq_len)[:, None])[None, None]
