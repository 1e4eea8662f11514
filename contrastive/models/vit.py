"""Vision Transformer (Dosovitskiy et al., 2021) as an image encoder.

Patches, learned or fixed 2-D sin-cos position embeddings, pre-LayerNorm blocks, then a pooled
`[batch, width]` vector by class token, global average or multi-head attention pooling (MAP).
The options cover the layouts of big_vision (SigLIP, LiT) and open_clip (CLIP) checkpoints:

| checkpoint family | pool  | pre_norm | final_norm  | act          | patch_bias | norm_eps |
| ----------------- | ----- | -------- | ----------- | ------------ | ---------- | -------- |
| OpenAI CLIP       | `cls` | True     | `pre_pool`  | `quick_gelu` | False      | 1e-5     |
| open_clip         | `cls` | True     | `pre_pool`  | `gelu`       | False      | 1e-5     |
| SigLIP            | `map` | False    | `pre_pool`  | `gelu_tanh`  | True       | 1e-6     |
| big_vision ViT    | `gap` | False    | `pre_pool`  | `gelu_tanh`  | True       | 1e-6     |
| timm / MAE (GAP)  | `gap` | False    | `post_pool` | `gelu`       | True       | 1e-6     |

(With class-token pooling, applying the final LayerNorm before or after pooling is the same.)
By default the class token has no position embedding of its own; `cls_posemb=True` gives it the
first row of the learned table (`pos_embedding` `[1, 1 + patches, width]`), CLIP's layout, so that
a CLIP checkpoint maps onto it tensor for tensor with the same parameter count.

`stem="conv"` replaces the patch embedding by the convolutional stem of Xiao et al.: log2(patch)
3x3 convolutions of stride 2 (channels doubling up to the width) with GELU, then a 1x1
projection; same token grid, same tokens downstream. On small images it learns local shape far
sooner than a patch embedding does (docs/models.md gives the measurement).

References: Dosovitskiy et al., "An Image is Worth 16x16 Words", https://arxiv.org/abs/2010.11929;
Xiao et al., "Early Convolutions Help Transformers See Better", https://arxiv.org/abs/2106.14881.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from contrastive.models import layers
from contrastive.models import sizes

Pool = Literal["cls", "gap", "map"]
Posemb = Literal["learn", "sincos2d"]
Stem = Literal["patch", "conv"]
FinalNorm = Literal["pre_pool", "post_pool", "none"]

POOLS = ("cls", "gap", "map")
POSEMBS = ("learn", "sincos2d")
STEMS = ("patch", "conv")
FINAL_NORMS = ("pre_pool", "post_pool", "none")


def posemb_sincos_2d(h: int, w: int, width: int, *, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sin-cos position embeddings (MoCo v3; big_vision's `posemb_sincos_2d`).

  Returns:
    `[1, h * w, width]` float32, rows in row-major patch order.
  """
  if width % 4:
    raise ValueError(f"sincos2d position embeddings need a width divisible by 4, got {width}.")
  y, x = np.mgrid[:h, :w]
  omega = np.arange(width // 4) / max(width // 4 - 1, 1)
  omega = 1.0 / (temperature**omega)
  y = np.einsum("m,d->md", y.flatten(), omega)
  x = np.einsum("m,d->md", x.flatten(), omega)
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return pe[None].astype(np.float32)


class ViT(nn.Module):
  """Vision Transformer encoder: `[batch, height, width, channels]` images to `[batch, width]`.

  Attributes:
    variant: a size name such as `"B/16"` (see `sizes.SIZES`); None to give every dimension.
    width, depth, mlp_dim, num_heads, patch_size: override the variant's dimensions.
    image_size: the input side (an int) or `(height, width)`; must be divisible by the patch
      unless `drop_remainder`.
    drop_remainder: let an image side that is not a multiple of the patch lose its last
      `side % patch` pixels, as a VALID convolution does (SigLIP So400m/14 at 384 px sees 27x27
      patches of 14); patch stem only.
    channels: input channels (3 for RGB; 1 for e.g. an audio spectrogram).
    posemb: `"learn"` (a learned table for `image_size`) or `"sincos2d"` (fixed, any size).
    pool: `"cls"` (class token), `"gap"` (mean of the patch tokens) or `"map"` (attention
      pooling head).
    pre_norm: a LayerNorm on the embedded tokens before the blocks (CLIP's `ln_pre`).
    final_norm: where the last LayerNorm goes: on every token before pooling, on the pooled
      vector, or nowhere.
    patch_bias: whether the patch embedding has a bias (CLIP's has none).
    stem: `"patch"` (one linear map per patch) or `"conv"` (the convolutional stem above; the
      patch size must be a power of two).
    cls_posemb: with `pool="cls"` and `posemb="learn"`, the class token has its own (first) row
      of the position table, added after the class token is prepended (CLIP).
    patch_dropout: in training, the fraction of patch tokens dropped per example (FLIP, Li et
      al. 2023; open_clip's `PatchDropout`): each example keeps a random subset of
      `max(1, int(patches * (1 - patch_dropout)))` patch tokens (a static count, so one compiled
      shape; in row-major order), after the position embeddings are added; the class token is
      always kept. Its randomness is the `"dropout"` rng. Off at evaluation (`train=False`).
    act, dropout, stoch_depth, remat, scan, norm_eps: see `layers.Encoder`.
    dtype: compute dtype (parameters stay float32).
  """

  variant: str | None = None
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  patch_size: int | None = None
  image_size: int | tuple[int, int] = 224
  channels: int = 3
  drop_remainder: bool = False
  posemb: Posemb = "learn"
  pool: Pool = "cls"
  pre_norm: bool = False
  final_norm: FinalNorm = "pre_pool"
  patch_bias: bool = True
  stem: Stem = "patch"
  cls_posemb: bool = False
  patch_dropout: float = 0.0
  act: layers.Activation = "gelu"
  dropout: float = 0.0
  stoch_depth: float = 0.0
  remat: layers.RematPolicy = "none"
  scan: bool = False
  norm_eps: float = 1e-6
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self):
    dims = self.dims  # validates the size
    layers.check_choice(self.posemb, POSEMBS, what="ViT posemb")
    layers.check_choice(self.pool, POOLS, what="ViT pool")
    layers.check_choice(self.final_norm, FINAL_NORMS, what="ViT final_norm")
    layers.check_choice(self.stem, STEMS, what="ViT stem")
    layers.validate_encoder_options(
      act=self.act, remat=self.remat, dropout=self.dropout, stoch_depth=self.stoch_depth, what="ViT"
    )
    layers.as_dtype(self.dtype)
    h, w = self.image_hw
    p = dims["patch_size"]
    if self.drop_remainder and self.stem != "patch":
      raise ValueError(f"ViT drop_remainder needs stem 'patch', got {self.stem!r}.")
    if (h % p or w % p) and not self.drop_remainder:
      raise ValueError(f"ViT image size {(h, w)} is not divisible by the patch size {p}.")
    if self.stem == "conv" and p & (p - 1):
      raise ValueError(f"ViT stem 'conv' needs a power-of-two patch size, got {p}.")
    if self.posemb == "sincos2d" and dims["width"] % 4:
      raise ValueError(f"ViT posemb 'sincos2d' needs a width divisible by 4, got {dims['width']}.")
    if self.cls_posemb and (self.pool != "cls" or self.posemb != "learn"):
      raise ValueError(
        f"ViT cls_posemb needs pool 'cls' and posemb 'learn', got pool "
        f"{self.pool!r} and posemb {self.posemb!r}."
      )
    pd = self.patch_dropout
    if isinstance(pd, bool) or not isinstance(pd, (int, float)) or not 0.0 <= pd < 1.0:
      raise ValueError(f"ViT patch_dropout must be a fraction in [0, 1), got {pd!r}.")
    if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1:
      raise ValueError(f"ViT channels must be a positive int, got {self.channels!r}.")
    super().__post_init__()

  @property
  def dims(self) -> dict[str, int]:
    """The resolved `width`, `depth`, `mlp_dim`, `num_heads` and `patch_size`."""
    base = sizes.decode_vit_variant(self.variant) if self.variant is not None else None
    return sizes.resolve_size(
      base,
      dict(
        width=self.width,
        depth=self.depth,
        mlp_dim=self.mlp_dim,
        num_heads=self.num_heads,
        patch_size=self.patch_size,
      ),
      what=f"ViT {self.variant or ''}".rstrip(),
    )

  @property
  def image_hw(self) -> tuple[int, int]:
    size = self.image_size
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, int) and s > 0 for s in hw):
      raise ValueError(f"ViT image_size must be a positive int or (height, width), got {size!r}.")
    return hw

  def dummy_input(self, batch_size: int) -> jax.ShapeDtypeStruct:
    """The shape and dtype of a batch of inputs, for `init` and `eval_shape`."""
    return jax.ShapeDtypeStruct((batch_size, *self.image_hw, self.channels), jnp.float32)

  def _conv_stem(self, images: jax.Array, patch_size: int, width: int, dtype) -> jax.Array:
    """log2(patch) stride-2 3x3 convolutions: `[n, h, w, c]` to `[n, h/p, w/p, width]`."""
    x = images
    num_convs = patch_size.bit_length() - 1
    for k in range(num_convs):
      features = max(width >> (num_convs - 1 - k), 8)
      x = nn.Conv(
        features,
        (3, 3),
        strides=(2, 2),
        padding="SAME",
        dtype=dtype,
        param_dtype=jnp.float32,
        name=f"stem_{k}",
        kernel_init=layers.partitioned(nn.initializers.lecun_normal(), (None, None, None, None)),
        bias_init=layers.partitioned(nn.initializers.zeros, (None,)),
      )(x)
      x = nn.gelu(x)
    return x

  def kept_patches(self, num_patches: int) -> int:
    """How many patch tokens an example keeps in training (`patch_dropout`)."""
    if not self.patch_dropout:
      return num_patches
    return max(1, int(num_patches * (1.0 - self.patch_dropout)))

  def _drop_patches(self, x: jax.Array) -> jax.Array:
    """`[n, patches, width]` to `[n, kept, width]`: per example, the tokens of the `kept`
    largest of `patches` uniform draws (the `"dropout"` rng), in their original order."""
    n, num, width = x.shape
    keep = self.kept_patches(num)
    scores = jax.random.uniform(self.make_rng("dropout"), (n, num))
    index = jnp.sort(jax.lax.top_k(scores, keep)[1], axis=-1)
    index = jnp.broadcast_to(index[..., None], (n, keep, width))
    return jnp.take_along_axis(x, index, axis=1)

  @nn.compact
  def __call__(self, images: ArrayLike, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Encodes images.

    Args:
      images: `[batch, height, width, channels]` floats (already normalized).
      train: enables dropout and stochastic depth (which need a `"dropout"` rng).

    Returns:
      `(pooled, aux)`: `pooled` is `[batch, width]` in the compute dtype; `aux["tokens"]` is
      `[batch, num_tokens, width]`, the encoded tokens (after the final LayerNorm when it is
      `pre_pool`).
    """
    dims = self.dims
    dtype = layers.as_dtype(self.dtype)
    images = jnp.asarray(images)
    p, width = dims["patch_size"], dims["width"]
    if images.ndim != 4 or images.shape[-1] != self.channels:
      raise ValueError(
        f"ViT expects images of shape [batch, height, width, {self.channels}], got {images.shape}."
      )
    h, w = images.shape[1:3]
    if (h % p or w % p) and not self.drop_remainder:
      raise ValueError(f"ViT image size {(h, w)} is not divisible by the patch size {p}.")
    if self.posemb == "learn" and (h, w) != self.image_hw:
      raise ValueError(
        f"ViT with learned position embeddings for image_size {self.image_hw} got "
        f"images of size {(h, w)}; use posemb='sincos2d' for other sizes."
      )
    images = layers.constrain(images, ("batch", None, None, None))
    if self.stem == "conv":
      images, p = self._conv_stem(images, p, width, dtype), 1
    x = nn.Conv(
      width,
      (p, p),
      strides=(p, p),
      padding="VALID",
      use_bias=self.patch_bias,
      dtype=dtype,
      param_dtype=jnp.float32,
      name="embedding",
      kernel_init=layers.partitioned(nn.initializers.lecun_normal(), (None, None, None, "embed")),
      bias_init=layers.partitioned(nn.initializers.zeros, ("embed",)),
    )(images)
    n, gh, gw, _ = x.shape
    x = jnp.reshape(x, (n, gh * gw, width))
    if self.posemb == "learn":
      pos = self.param(
        "pos_embedding",
        layers.partitioned(nn.initializers.normal(stddev=width**-0.5), (None, None, "embed")),
        (1, int(self.cls_posemb) + gh * gw, width),
        jnp.float32,
      )
    else:
      pos = posemb_sincos_2d(gh, gw, width)
    pos = pos.astype(dtype)
    x = x + (pos[:, 1:] if self.cls_posemb else pos)
    if train and self.patch_dropout > 0:
      x = self._drop_patches(x)
    if self.pool == "cls":
      # Zeros (big_vision) unless a LayerNorm follows: the LayerNorm of a zero vector divides by
      # sqrt(eps), which made the first gradient of the class token 1e5 times the others'; CLIP
      # draws it from N(0, 1/width).
      cls_init = (
        nn.initializers.normal(stddev=width**-0.5) if self.pre_norm else nn.initializers.zeros
      )
      cls = self.param(
        "cls", layers.partitioned(cls_init, (None, None, "embed")), (1, 1, width), jnp.float32
      )
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (n, 1, width)), x], axis=1)
    if self.cls_posemb:
      x = jnp.concatenate([x[:, :1] + pos[:, :1], x[:, 1:]], axis=1)
    x = layers.constrain(x, ("batch", "length", "embed"))
    if self.pre_norm:
      x = layers.layer_norm(dtype=dtype, eps=self.norm_eps, name="norm_pre")(x)
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
      name="transformer",
    )(x, train=train)
    if self.final_norm == "pre_pool":
      x = layers.layer_norm(dtype=dtype, eps=self.norm_eps, name="norm")(x)
    if self.pool == "cls":
      pooled = x[:, 0]
    elif self.pool == "gap":
      pooled = jnp.mean(x, axis=1)
    else:
      pooled = layers.MAPHead(
        num_heads=dims["num_heads"],
        mlp_dim=dims["mlp_dim"],
        act=self.act,
        norm_eps=self.norm_eps,
        dtype=dtype,
        name="map",
      )(x, train=train)
    if self.final_norm == "post_pool":
      pooled = layers.layer_norm(dtype=dtype, eps=self.norm_eps, name="norm")(pooled)
    pooled = layers.constrain(pooled, ("batch", "embed"))
    return pooled, {"tokens": x}
