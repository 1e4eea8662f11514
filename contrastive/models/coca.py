"""CoCa: a contrastive two-tower model with a captioning decoder, as open_clip implements it.

- The image tower: a ViT (`final_norm="none"`) whose tokens, the class token's included, an
  `AttentionalPooler` reads with `pool_queries` learned queries; a LayerNorm on the queries'
  outputs; the first gives the contrastive embedding (through the bias-free `head`), the other
  `pool_queries - 1` are the image tokens the decoder attends to (open_clip's
  `attentional_pool=True` with `pool_type="tok"`, "the original OpenCLIP CoCa setup").
- The text tower: `decoder.CocaText`, whose appended class token gives the text embedding
  (through `head`) and whose token outputs feed the decoder.
- The decoder: `decoder.MultimodalDecoder`, giving the teacher-forced caption logits.

Parameters: `image` (`encoder`, `pool` {`query`, `norm_q`, `norm_k`, `attn`}, `norm`, `head`),
`text` (`encoder`, `head`), `decoder`, `log_scale` and, with a bias, `bias`. With open_clip's
names: `visual.{conv1, ..., transformer}` -> `image/encoder`, `visual.attn_pool` ->
`image/pool` (`ln_q`, `ln_k` -> `norm_q`, `norm_k`), `visual.ln_post` -> `image/norm`,
`visual.proj` -> `image/head`; `text.*` -> `text/encoder` (`cls_emb` -> `cls`, `ln_final` ->
`norm`), `text.text_projection` -> `text/head`; `text_decoder.resblocks.i` ->
`decoder/layer_i/self`, `text_decoder.cross_attn.i` -> `decoder/layer_i/cross` (`ln_1_kv` ->
`norm_kv`), `text_decoder.ln_final` -> `decoder/norm`, `text_decoder.text_projection` ->
`decoder/head`; `logit_scale` -> `log_scale`.

Reference: Yu et al., "CoCa: Contrastive Captioners are Image-Text Foundation Models",
https://arxiv.org/abs/2205.01917; open_clip's `coca_model.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from contrastive.models import layers
from contrastive.models import towers
from contrastive.models.decoder import CocaText
from contrastive.models.decoder import MultimodalDecoder

MODALITIES = ("image", "text")


class AttentionalPooler(nn.Module):
  """Learned queries cross-attending to tokens (open_clip's `AttentionalPooler`).

  .. math:: \\mathrm{out} = \\mathrm{MHA}(\\mathrm{LN}_q(Q), \\mathrm{LN}_k(x), \\mathrm{LN}_k(x))

  Attributes:
    width: the queries' (and the output's) width.
    num_queries, num_heads: the number of queries and attention heads.
    norm_eps: LayerNorm epsilon; dtype: compute dtype.
  """

  width: int
  num_queries: int
  num_heads: int
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`[batch, length, ctx_dim] -> [batch, num_queries, width]`."""
    x = layers.layer_norm(dtype=self.dtype, eps=self.norm_eps, name="norm_k")(x)
    query = self.param(
      "query",
      layers.partitioned(nn.initializers.normal(stddev=1.0), (None, "embed")),
      (self.num_queries, self.width),
      jnp.float32,
    )
    query = layers.layer_norm(dtype=self.dtype, eps=self.norm_eps, name="norm_q")(query)
    query = jnp.broadcast_to(query.astype(x.dtype), (x.shape[0], self.num_queries, self.width))
    return layers.Attention(self.num_heads, dtype=self.dtype, name="attn")(query, x)


class CocaTower(nn.Module):
  """One CoCa tower: encoder, optional attentional pooling, bias-free head, L2 normalization.

  Attributes:
    encoder: called as `encoder(x, train=...)`, returning `([batch, width], {"tokens": ...})`.
    embed_dim: the shared embedding size (and, with pooling, the pooler's width).
    pool_queries: 0 for none (the encoder's pooled output and tokens); else the pooler's
      queries, the first pooled, the rest the tokens.
    pool_heads: the pooler's attention heads.
    norm_eps: the epsilon of the LayerNorm after the pooler (the pooler's own are 1e-5, as
      open_clip builds its `AttentionalPooler` with the default LayerNorm).
    lock_encoder, lock_head: as `towers.Tower` (the head here: all but the encoder).
  """

  encoder: nn.Module
  embed_dim: int
  pool_queries: int = 0
  pool_heads: int = 8
  norm_eps: float = 1e-5
  lock_encoder: bool = False
  lock_head: bool = False

  @nn.compact
  def __call__(
    self, x: ArrayLike, *, train: bool, decode: bool = False
  ) -> tuple[jax.Array | None, dict[str, jax.Array]]:
    """Returns `(embedding [batch, embed_dim] unit norm, {"features", "norm", "tokens"})`.

    With `decode` (the text tower in generation), only `{"tokens"}` of the cached encoder.
    """
    if decode:
      return None, self.encoder(x, train=False, decode=True)[1]
    features, aux = self.encoder(x, train=train and not self.lock_encoder)
    tokens = aux["tokens"]
    if self.lock_encoder:
      features, tokens = jax.lax.stop_gradient((features, tokens))
    if self.pool_queries:
      dtype = tokens.dtype
      pooled = AttentionalPooler(
        self.embed_dim, self.pool_queries, self.pool_heads, dtype=dtype, name="pool"
      )(tokens)
      pooled = layers.layer_norm(dtype=dtype, eps=self.norm_eps, name="norm")(pooled)
      features, tokens = pooled[:, 0], pooled[:, 1:]
    features = layers.constrain(features.astype(jnp.float32), ("batch", "embed"))
    z = nn.Dense(
      self.embed_dim,
      use_bias=False,
      dtype=jnp.float32,
      param_dtype=jnp.float32,
      name="head",
      kernel_init=layers.partitioned(
        nn.initializers.normal(stddev=features.shape[-1] ** -0.5), ("embed", "joint")
      ),
    )(features)
    if self.lock_head:
      z, features, tokens = jax.lax.stop_gradient((z, features, tokens))
    embedding, norm = towers.l2_normalize(z)
    embedding = layers.constrain(embedding, ("batch", "joint"))
    return embedding, {"features": features, "norm": norm, "tokens": tokens}


class CoCa(nn.Module):
  """Contrastive captioner: image and text towers plus a multimodal decoder.

  `apply` takes and returns what `TowerModel`'s does, plus the caption logits; `generate` in
  `contrastive.models.generate` decodes captions with the `encode_image` and `decode_step`
  methods.

  Attributes:
    image_encoder: the image encoder (a `ViT`, whose tokens the pooler reads).
    text_encoder: a `CocaText`.
    decoder: a `MultimodalDecoder` (its width that of the text tower).
    embed_dim: the shared embedding size, also the width of the pooled image tokens.
    pool_queries: the image pooler's queries (one embedding, `pool_queries - 1` tokens).
    pool_heads: the image pooler's attention heads.
    scale_init, bias_init, max_scale, locked: as `TowerModel`.
  """

  image_encoder: nn.Module
  text_encoder: CocaText
  decoder: MultimodalDecoder
  embed_dim: int
  pool_queries: int = 256
  pool_heads: int = 8
  scale_init: float = towers.CONVENTIONS["clip"]["scale_init"]
  bias_init: float | None = towers.CONVENTIONS["clip"]["bias_init"]
  max_scale: float | None = towers.CONVENTIONS["clip"]["max_scale"]
  locked: Sequence[str] = ()

  has_decoder = True

  def __post_init__(self):
    if isinstance(self.embed_dim, bool) or not isinstance(self.embed_dim, int):
      raise ValueError(f"embed_dim must be a positive int, got {self.embed_dim!r}.")
    for field in ("embed_dim", "pool_queries", "pool_heads"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"CoCa {field} must be a positive int, got {value!r}.")
    if self.pool_queries < 2:
      raise ValueError(
        f"CoCa pool_queries must be at least 2 (one embedding, then the decoder's image "
        f"tokens), got {self.pool_queries}."
      )
    if self.embed_dim % self.pool_heads:
      raise ValueError(
        f"CoCa embed_dim {self.embed_dim} is not divisible by pool_heads {self.pool_heads}."
      )
    if not isinstance(self.text_encoder, CocaText):
      raise ValueError(
        f"CoCa's text encoder must be a CocaText (kind 'coca_text'), got "
        f"{type(self.text_encoder).__name__}."
      )
    text_width, dec_width = self.text_encoder.dims["width"], self.decoder.dims["width"]
    if text_width != dec_width:
      raise ValueError(
        f"The decoder's width {dec_width} must equal the text tower's width {text_width} (the "
        f"decoder reads the text tower's tokens)."
      )
    if self.decoder.vocab_size != self.text_encoder.vocab_size:
      raise ValueError(
        f"The decoder's vocab_size {self.decoder.vocab_size} differs from the text tower's "
        f"{self.text_encoder.vocab_size}."
      )
    for entry in self.locked:
      known = {*MODALITIES, *(f"{m}/encoder" for m in MODALITIES), *towers.SCALARS}
      if entry not in known:
        raise ValueError(f"Cannot lock {entry!r}: known entries are {sorted(known)}.")
      if entry == "bias" and self.bias_init is None:
        raise ValueError("Cannot lock 'bias': the model has none (bias_init is None).")
    super().__post_init__()

  @property
  def modalities(self) -> tuple[str, ...]:
    return MODALITIES

  @property
  def encoders(self) -> dict[str, nn.Module]:
    return {"image": self.image_encoder, "text": self.text_encoder}

  def dummy_batch(self, batch_size: int = 1) -> dict[str, jax.Array]:
    """Zeros of both modalities' input shapes and dtypes, for `init`."""
    shapes = {m: enc.dummy_input(batch_size) for m, enc in self.encoders.items()}
    return {m: jnp.zeros(s.shape, s.dtype) for m, s in shapes.items()}

  def setup(self):
    locked = set(self.locked)

    def tower(modality, encoder, **kwargs):
      return CocaTower(
        encoder.clone(parent=None, name=None),
        embed_dim=self.embed_dim,
        lock_encoder=modality in locked or f"{modality}/encoder" in locked,
        lock_head=modality in locked,
        **kwargs,
      )

    self.image = tower(
      "image",
      self.image_encoder,
      pool_queries=self.pool_queries,
      pool_heads=self.pool_heads,
      norm_eps=getattr(self.image_encoder, "norm_eps", 1e-5),
    )
    self.text = tower("text", self.text_encoder)
    self.log_scale = self.param(
      "log_scale", nn.initializers.constant(math.log(self.scale_init)), (), jnp.float32
    )
    if self.bias_init is not None:
      self.bias = self.param("bias", nn.initializers.constant(self.bias_init), (), jnp.float32)

  def __call__(
    self, batch: Mapping[str, ArrayLike], *, train: bool
  ) -> tuple[dict[str, jax.Array], dict[str, Any]]:
    """Embeds the modalities in `batch` and, with both, gives the caption logits.

    Args:
      batch: `{"image": [batch, H, W, 3] floats, "text": [batch, seq_len] int32 ids}` or one
        of the two (`init` needs both: `model.dummy_batch()`).
      train: enables dropout and stochastic depth (which need a `"dropout"` rng).

    Returns:
      `(embeddings, extras)` as `TowerModel` returns them; with both modalities `extras` also
      holds `caption_logits`, `[batch, seq_len - 1, vocab]` float32: at position `l` the logits
      of token `l + 1` given the image and tokens `0..l` (open_clip's `CoCa(image, text)
      ["logits"]`).

    Raises:
      ValueError: `batch` has a key other than `image` and `text`.
    """
    unknown = [name for name in batch if name not in MODALITIES]
    if unknown:
      raise ValueError(
        f"No encoder for modality {unknown[0]!r} (in the batch); the model's modalities are "
        f"{list(MODALITIES)}."
      )
    embeddings, extras, tokens = {}, {}, {}
    for name, tower in (("image", self.image), ("text", self.text)):
      if name in batch:
        embeddings[name], aux = tower(batch[name], train=train)
        tokens[name] = aux.pop("tokens")
        extras.update({f"{name}/{key}": value for key, value in aux.items()})
    if len(tokens) == 2:
      extras["caption_logits"] = self.decoder(tokens["text"][:, :-1], tokens["image"], train=train)
    extras.update(self._scale_and_bias())
    return embeddings, extras

  def _scale_and_bias(self) -> dict[str, jax.Array | None]:
    bias = self.bias if self.bias_init is not None else None
    return towers.logit_scalars(
      self.log_scale, bias, locked=set(self.locked), max_scale=self.max_scale
    )

  def encode_image(self, images: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """`[batch, H, W, 3]` -> (`[batch, embed_dim]` unit embeddings, `[batch, pool_queries - 1,
    embed_dim]` the decoder's image tokens), in inference mode."""
    embedding, aux = self.image(images, train=False)
    return embedding, aux["tokens"]

  def decode_step(self, tokens: ArrayLike, image_tokens: jax.Array | None) -> jax.Array:
    """Feeds `tokens` `[batch, n]` after those already in the `"cache"` collection.

    Args:
      tokens: the next token ids.
      image_tokens: `encode_image`'s tokens on the first call (which caches the decoder's
        projections of them); None after.

    Returns:
      `[batch, n, vocab]` float32 logits of the tokens that follow each of `tokens`.
    """
    _, aux = self.text(tokens, train=False, decode=True)
    return self.decoder(aux["tokens"], image_tokens, train=False, decode=True)
