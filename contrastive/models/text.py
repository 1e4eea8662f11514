"""Text transformer encoder: token ids to a pooled `[batch, width]` vector.

Token and learned position embeddings, pre-LayerNorm blocks with causal (CLIP) or bidirectional
(SigLIP) attention, a final LayerNorm, then pooling:

- `"eot"`: the position of the largest token id in each row, CLIP's convention (its
  end-of-text token has the largest id of the vocabulary);
- `"last"`: the last non-padding token (the end-of-text token of any tokenizer that appends
  one and pads on the right);
- `"eos"`: the first position holding `eos_id` (position 0 where a row has none), Hugging Face
  CLIP's convention for configs whose `eos_token_id` is not the legacy 2;
- `"mean"`: the mean over non-padding tokens.

Token id `pad_id` (default 0) is padding: no token attends to it and no pooling reads it, so the
embedding of a text does not depend on how much padding follows it. `pad_id=None` turns this
off (every position is a token, as in big_vision's SigLIP text tower).

| checkpoint family | causal | pool   | act          | norm_eps |
| ----------------- | ------ | ------ | ------------ | -------- |
| OpenAI CLIP       | True   | `eot`  | `quick_gelu` | 1e-5     |
| open_clip         | True   | `eot`  | `gelu`       | 1e-5     |
| SigLIP            | False  | `last` | `gelu_tanh`  | 1e-6     |

Reference: Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", https://arxiv.org/abs/2103.00020.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from contrastive.models import layers
from contrastive.models import sizes

Pool = Literal["eot", "last", "mean", "eos"]
FinalNorm = Literal["pre_pool", "post_pool", "none"]

POOLS = ("eot", "last", "mean", "eos")
FINAL_NORMS = ("pre_pool", "post_pool", "none")


class TextTransformer(nn.Module):
  """Text encoder: `[batch, seq_len]` int token ids to `[batch, width]`.

  Attributes:
    variant: a size name such as `"B"` or `"CLIP-B"` (see `sizes.TEXT_SIZES`); None to give
      every dimension.
    width, depth, mlp_dim, num_heads: override the variant's dimensions.
    vocab_size: rows of the token embedding table (required).
    max_len: rows of the position table, the longest text accepted (required).
    causal: causal (each token sees itself and earlier tokens) or bidirectional attention.
    pool: `"eot"`, `"last"`, `"mean"` or `"eos"` (see the module docstring).
    eos_id: the end-of-text id that pool `"eos"` looks for (required by it, unused otherwise).
    pad_id: the padding token id, or None for no padding.
    final_norm: where the last LayerNorm goes: on every token before pooling, on the pooled
      vector, or nowhere.
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
  causal: bool = True
  pool: Pool = "last"
  pad_id: int | None = 0
  eos_id: int | None = None
  final_norm: FinalNorm = "pre_pool"
  act: layers.Activation = "gelu"
  dropout: float = 0.0
  stoch_depth: float = 0.0
  remat: layers.RematPolicy = "none"
  scan: bool = False
  norm_eps: float = 1e-6
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self):
    self.dims  # noqa: B018  (validates the size)
    for field in ("vocab_size", "max_len"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"TextTransformer needs {field}, a positive int; got {value!r}.")
    layers.check_choice(self.pool, POOLS, what="text pool")
    if self.pool == "eos" and (isinstance(self.eos_id, bool) or not isinstance(self.eos_id, int)):
      raise ValueError(f"TextTransformer pool 'eos' needs eos_id, an int; got {self.eos_id!r}.")
    layers.check_choice(self.final_norm, FINAL_NORMS, what="text final_norm")
    layers.validate_encoder_options(
      act=self.act,
      remat=self.remat,
      dropout=self.dropout,
      stoch_depth=self.stoch_depth,
      what="TextTransformer",
    )
    layers.as_dtype(self.dtype)
    super().__post_init__()

  @property
  def dims(self) -> dict[str, int]:
    """The resolved `width`, `depth`, `mlp_dim` and `num_heads`."""
    base = sizes.decode_text_variant(self.variant) if self.variant is not None else None
    return sizes.resolve_size(
      base,
      dict(width=self.width, depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads),
      what=f"TextTransformer {self.variant or ''}".rstrip(),
    )

  def dummy_input(self, batch_size: int) -> jax.ShapeDtypeStruct:
    """The shape and dtype of a batch of inputs, for `init` and `eval_shape`."""
    return jax.ShapeDtypeStruct((batch_size, self.max_len), jnp.int32)

  @nn.compact
  def __call__(self, tokens: ArrayLike, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Encodes token ids.

    Args:
      tokens: `[batch, seq_len]` int token ids, `seq_len <= max_len`, right-padded with
        `pad_id`.
      train: enables dropout and stochastic depth (which need a `"dropout"` rng).

    Returns:
      `(pooled, aux)`: `pooled` is `[batch, width]` in the compute dtype; `aux["tokens"]` is
      `[batch, seq_len, width]`, the encoded tokens (after the final LayerNorm when it is
      `pre_pool`).
    """
    dims = self.dims
    dtype = layers.as_dtype(self.dtype)
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(
        f"TextTransformer expects int token ids of shape [batch, seq_len], got "
        f"{tokens.dtype} of shape {tokens.shape}."
      )
    seq_len = tokens.shape[1]
    if seq_len > self.max_len:
      raise ValueError(
        f"Text of length {seq_len} is longer than the position table (max_len={self.max_len})."
      )
    width = dims["width"]
    tokens = layers.constrain(tokens, ("batch", "length"))
    x = layers.token_embedding(self.vocab_size, width, dtype)(tokens)
    pos = layers.position_table(self, self.max_len, width)
    x = x + pos[None, :seq_len].astype(dtype)
    x = layers.constrain(x, ("batch", "length", "embed"))
    x = nn.Dropout(self.dropout)(x, deterministic=not train)

    if self.pad_id is None:
      valid = jnp.ones(tokens.shape, bool)
    else:
      valid = tokens != self.pad_id
    mask = valid[:, None, None, :]  # [batch, 1 (heads), 1 (queries), keys]
    if self.causal:
      mask = mask & jnp.tril(jnp.ones((seq_len, seq_len), bool))[None, None]
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
      name="transformer",
    )(x, mask, train=train)
    if self.final_norm == "pre_pool":
      x = layers.layer_norm(dtype=dtype, eps=self.norm_eps, name="norm")(x)

    positions = jnp.arange(seq_len)
    if self.pool == "eot":
      index = jnp.argmax(tokens, axis=-1)
    elif self.pool == "eos":
      index = jnp.argmax(tokens == self.eos_id, axis=-1)
    elif self.pool == "last":
      index = jnp.max(jnp.where(valid, positions[None], 0), axis=-1)
    if self.pool in ("eot", "last", "eos"):
      pooled = jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0]
    else:
      weights = valid.astype(jnp.float32)
      total = jnp.einsum("bld,bl->bd", x.astype(jnp.float32), weights)
      pooled = (total / jnp.maximum(weights.sum(-1, keepdims=True), 1.0)).astype(dtype)
    if self.final_norm == "post_pool":
      pooled = layers.layer_norm(dtype=dtype, eps=self.norm_eps, name="norm")(pooled)
    pooled = layers.constrain(pooled, ("batch", "embed"))
    return pooled, {"tokens": x}
