"""A plain convolutional image encoder: stages of 3x3 convolutions and 2x2 max-pooling.

`[batch, H, W, channels]` images to `[batch, width]`: for each stage `i`, `convs_per_stage` 3x3
stride-1 convolutions (SAME padding, bias) with `widths[i]` channels, each followed by the
activation, then a 2x2 max-pool of stride 2; then the `[H / 2**n, W / 2**n, widths[-1]]` grid
flattened row-major (`pool="flatten"`, which keeps where things are in the image, as captions
name it) or averaged (`pool="gap"`), and `Dense(width)` with the activation. With
`first_downsample="space_to_depth"` the first stage halves the resolution before its convolutions
instead, by folding each 2x2 block of pixels into channels: the same output grid and no pixel lost,
with four times fewer activations in the stage.

It is the demo's image tower: on small images a plain CNN learns shape under a contrastive
signal sooner than a ViT of about the same cost (docs/models.md gives the measurement).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from contrastive.models import layers

Pool = Literal["flatten", "gap"]
Downsample = Literal["pool", "space_to_depth"]

POOLS = ("flatten", "gap")
DOWNSAMPLES = ("pool", "space_to_depth")


def _is_positive_int(value) -> bool:
  return not isinstance(value, bool) and isinstance(value, int) and value > 0


class CNN(nn.Module):
  """Convolutional encoder: `[batch, height, width, channels]` images to `[batch, width]`.

  Attributes:
    image_size: the input side (an int) or `(height, width)`; divisible by `2 ** len(widths)`.
    channels: input channels (3 for RGB).
    widths: the channels of each stage (one 2x2 max-pool per stage).
    convs_per_stage: the 3x3 convolutions in each stage.
    width: the output size (of the final Dense layer).
    pool: `"flatten"` (the final grid, row-major: keeps position) or `"gap"` (its mean).
    first_downsample: how the first stage halves the resolution: `"pool"` (a 2x2 max-pool
      after its convolutions, like every stage) or `"space_to_depth"` (2x2 pixel blocks folded
      into channels before them).
    act: the activation after every convolution and the Dense layer (`layers.ACTIVATIONS`).
    dtype: compute dtype (parameters stay float32).
  """

  image_size: int | tuple[int, int] = 32
  channels: int = 3
  widths: Sequence[int] = (32, 64, 128)
  convs_per_stage: int = 1
  width: int = 128
  pool: Pool = "flatten"
  first_downsample: Downsample = "pool"
  act: layers.Activation = "gelu"
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self):
    for field in ("channels", "convs_per_stage", "width"):
      if not _is_positive_int(getattr(self, field)):
        raise ValueError(f"CNN {field} must be a positive int, got {getattr(self, field)!r}.")
    if (
      isinstance(self.widths, (str, bytes))
      or not isinstance(self.widths, Sequence)
      or not self.widths
      or not all(_is_positive_int(w) for w in self.widths)
    ):
      raise ValueError(
        f"CNN widths must be a non-empty sequence of positive ints, got {self.widths!r}."
      )
    layers.check_choice(self.pool, POOLS, what="CNN pool")
    layers.check_choice(self.first_downsample, DOWNSAMPLES, what="CNN first_downsample")
    layers.check_choice(self.act, layers.ACTIVATIONS, what="CNN activation")
    layers.as_dtype(self.dtype)
    h, w = self.image_hw
    factor = 2 ** len(self.widths)
    if h % factor or w % factor:
      raise ValueError(
        f"CNN image size {(h, w)} is not divisible by {factor} (2 ** "
        f"{len(self.widths)}, one 2x2 max-pool per stage of widths "
        f"{tuple(self.widths)})."
      )
    super().__post_init__()

  @property
  def image_hw(self) -> tuple[int, int]:
    size = self.image_size
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(_is_positive_int(s) for s in hw):
      raise ValueError(f"CNN image_size must be a positive int or (height, width), got {size!r}.")
    return hw

  def dummy_input(self, batch_size: int) -> jax.ShapeDtypeStruct:
    """The shape and dtype of a batch of inputs, for `init` and `eval_shape`."""
    return jax.ShapeDtypeStruct((batch_size, *self.image_hw, self.channels), jnp.float32)

  @nn.compact
  def __call__(self, images: ArrayLike, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Encodes `[batch, height, width, channels]` floats; returns `([batch, width], {})`."""
    del train  # no dropout
    dtype = layers.as_dtype(self.dtype)
    act = layers.ACTIVATIONS[self.act]
    x = jnp.asarray(images)
    if x.ndim != 4 or x.shape[1:] != (*self.image_hw, self.channels):
      raise ValueError(
        f"CNN expects images of shape [batch, {', '.join(map(str, self.image_hw))}"
        f", {self.channels}], got {x.shape}."
      )
    x = layers.constrain(x, ("batch", None, None, None))
    space_to_depth = self.first_downsample == "space_to_depth"
    if space_to_depth:
      n, h, w, c = x.shape
      x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
      x = x.reshape(n, h // 2, w // 2, 4 * c)
    for i, features in enumerate(self.widths):
      for k in range(self.convs_per_stage):
        x = nn.Conv(
          features,
          (3, 3),
          strides=(1, 1),
          padding="SAME",
          dtype=dtype,
          param_dtype=jnp.float32,
          name=f"conv_{i}_{k}",
          kernel_init=layers.partitioned(nn.initializers.lecun_normal(), (None, None, None, None)),
          bias_init=layers.partitioned(nn.initializers.zeros, (None,)),
        )(x)
        x = act(x)
      if i > 0 or not space_to_depth:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = layers.constrain(x, ("batch", None, None, None))
    if self.pool == "flatten":
      x = jnp.reshape(x, (x.shape[0], -1))
    else:
      x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
      self.width,
      dtype=dtype,
      param_dtype=jnp.float32,
      name="head_dense",
      kernel_init=layers.partitioned(nn.initializers.lecun_normal(), (None, "embed")),
      bias_init=layers.partitioned(nn.initializers.zeros, ("embed",)),
    )(x)
    x = act(x)
    return layers.constrain(x, ("batch", "embed")), {}
