"""A residual MLP encoder for vector modalities (tabular features, precomputed embeddings).

`Dense(width)`, then `depth` pre-LayerNorm residual MLP blocks, then a LayerNorm:
`[batch, features]` floats to `[batch, width]`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from contrastive.models import layers


class MLPEncoder(nn.Module):
  """Residual MLP: `[batch, in_features]` to `[batch, width]`.

  Attributes:
    in_features: the input size (required; checked against the input and used by
      `dummy_input`).
    width: the hidden (and output) size.
    depth: the number of residual blocks (0 gives one Dense layer and a LayerNorm).
    mlp_dim: each block's hidden size (default `4 * width`).
    act, dropout, norm_eps: as in `layers.Encoder`.
    dtype: compute dtype (parameters stay float32).
  """

  in_features: int | None = None
  width: int = 256
  depth: int = 2
  mlp_dim: int | None = None
  act: layers.Activation = "gelu"
  dropout: float = 0.0
  norm_eps: float = 1e-6
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self):
    for field in ("in_features", "width"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"MLPEncoder needs {field}, a positive int; got {value!r}.")
    if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 0:
      raise ValueError(f"MLPEncoder depth must be a non-negative int, got {self.depth!r}.")
    layers.check_choice(self.act, layers.ACTIVATIONS, what="MLPEncoder activation")
    layers.check_rate(self.dropout, what="MLPEncoder dropout")
    layers.as_dtype(self.dtype)
    super().__post_init__()

  def dummy_input(self, batch_size: int) -> jax.ShapeDtypeStruct:
    """The shape and dtype of a batch of inputs, for `init` and `eval_shape`."""
    return jax.ShapeDtypeStruct((batch_size, self.in_features), jnp.float32)

  @nn.compact
  def __call__(self, x: ArrayLike, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Encodes `[batch, in_features]` floats; returns `([batch, width], {})`."""
    dtype = layers.as_dtype(self.dtype)
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[-1] != self.in_features:
      raise ValueError(
        f"MLPEncoder expects inputs of shape [batch, {self.in_features}], got {x.shape}."
      )
    x = layers.constrain(x, ("batch", None))
    x = nn.Dense(
      self.width,
      dtype=dtype,
      param_dtype=jnp.float32,
      name="input",
      kernel_init=layers.partitioned(nn.initializers.lecun_normal(), (None, "embed")),
      bias_init=layers.partitioned(nn.initializers.zeros, ("embed",)),
    )(x)
    for i in range(self.depth):
      y = layers.layer_norm(dtype=dtype, eps=self.norm_eps, name=f"norm_{i}")(x)
      y = layers.MlpBlock(
        self.mlp_dim or 4 * self.width,
        act=self.act,
        dropout=self.dropout,
        dtype=dtype,
        name=f"block_{i}",
      )(y, train=train)
      x = x + nn.Dropout(self.dropout)(y, deterministic=not train)
    x = layers.layer_norm(dtype=dtype, eps=self.norm_eps, name="norm")(x)
    return layers.constrain(x, ("batch", "embed")), {}
