r"""LiT (Zhai et al., 2022): a locked, pretrained image tower and a text tower trained to match it.

    python -m contrastive.train --config configs/lit.py --workdir gs://BUCKET/lit \
        --config.checkpoint.init_from=gs://BUCKET/clip_b16 \
        --config.data.arrayrecord.path=/data/cc12m --config.data.tokenizer=/data/c4_32k.model
    python -m contrastive.train --config configs/lit.py:cpu --workdir runs/lit_cpu \
        --config.checkpoint.init_from=runs/demo

The image tower (encoder and head: `model.locked = ("image",)`) is loaded from another run's
checkpoint (`checkpoint.init_from`, the `image` parameters only) and never changes: the
optimizer gives it no update and keeps no state for it, and the backward pass skips it. Use
`model.locked = ("image/encoder",)` to train the image head (LiT's "Lu" setting).

From the paper (https://arxiv.org/abs/2111.07991): the locked image tower (L) with an unlocked
text tower (U) from scratch works best; contrastive (softmax) loss; large batches (16k-32k);
learning rate 1e-3 and weight decay 1e-4. Our choices: AdamW with beta2 0.95 (as in SigLiT),
batch 16,384, 60,000 steps (about 1B examples seen), 5% warmup with cosine decay, a B-sized
bidirectional text tower over 16 SentencePiece tokens, bfloat16 compute. The image tower must
match the checkpoint it comes from (here a `clip_vit_b16.py` run; edit `model.encoders.image`
for another).

With `pretrained=PATH`, a checkpoint as downloaded (open_clip, Hugging Face, big_vision; see
`models.load_pretrained`): the image tower is the checkpoint's, locked, loaded from it
(`checkpoint.init_from=PATH`); the model config, tokenizer, context length, image size and
normalization are read from it when this config is built (`contrastive.train.pretrained`); the
loss is the family's (softmax for CLIP, sigmoid for SigLIP: SigLiT). The text tower has the
checkpoint's architecture and vocabulary, and `text=scratch` (the default, LiT's "Lu" with the
LiT optimizer above) starts it from random weights, while `text=pretrained` loads it too, with
the logit scale and bias, and trains it at fine-tuning settings (those of `configs/finetune.py`:
FLYP's learning rate 1e-5, weight decay 0.1, 500 warmup steps, AdamW betas (0.9, 0.999)).

Arguments: `cpu` (CPU sizes on the built-in data; the image tower is `configs/demo.py`'s, so
`init_from` can be a demo run; with `pretrained`, the checkpoint's model on the built-in data);
`batch_size=N`; `pretrained=PATH`; `name=NAME` (the open_clip architecture where the path does
not say); `text=scratch|pretrained`.
"""

from ml_collections import config_dict

from contrastive import data
from contrastive import evaluate
from contrastive import models
from contrastive.run import config as run_config
from contrastive.train import pretrained as train_pretrained

TEXT_INITS = ("scratch", "pretrained")


def get_config(arg=None):
  arg = run_config.parse_arg(
    arg, cpu=False, batch_size=16_384, pretrained="", name="", text="scratch"
  )
  if arg.text not in TEXT_INITS:
    raise ValueError(f"text must be one of {list(TEXT_INITS)}, got {arg.text!r}.")
  c = run_config.defaults()  # every trainer key, so each can be overridden
  c.seed = 0
  c.total_steps = 60_000
  c.mesh.update(data=-1, fsdp=1, tensor=1)

  c.data = data.default_config()
  c.data.source = "arrayrecord"
  c.data.arrayrecord.path = config_dict.placeholder(str)  # required
  c.data.image_size = 224
  c.data.batch_size = arg.batch_size
  c.data.tokenizer = "c4_en_32k.model"
  c.data.max_len = 16
  c.data.normalization = "clip"  # must match the image tower's pretraining
  c.data.num_workers = 8
  c.data.read_threads = 16

  # The image tower of a configs/clip_vit_b16.py run, locked.
  c.model = models.model_config(
    image="B/16",
    text="B",
    image_size=224,
    vocab_size=32_000,
    max_len=16,
    embed_dim=512,
    convention="clip",
  )
  c.model.encoders.image.update(
    pool="cls", pre_norm=True, act="quick_gelu", patch_bias=False, norm_eps=1e-5
  )
  c.model.encoders.text.update(causal=False, pool="last")
  c.model.dtype = "bfloat16"
  c.model.locked = ("image",)

  c.loss.name = "softmax"
  c.optim.update(
    name="adamw",
    lr=1e-3,
    schedule="cosine",
    warmup_steps=3_000,
    end_lr=0.0,
    b1=0.9,
    b2=0.95,
    eps=1e-8,
    weight_decay=1e-4,
    grad_clip_norm=1.0,
  )
  # Required: the workdir whose `image` parameters to load (--config.checkpoint.init_from=DIR).
  c.checkpoint.update(every_steps=2_000, keep=3, init_from_keys=("image",))
  c.eval.update(
    every_steps=5_000,
    at_end=True,
    batch_size=1_024,
    report=True,
    tasks=dict(
      imagenet=dict(
        kind="zeroshot",
        class_names="imagenet",
        templates=("a photo of a {}.",),
        source=dict(name="tfds", dataset="imagenet2012", split="validation"),
      )
    ),
  )
  c.log.update(every_steps=100)

  if arg.cpu:
    demo_image = dict(
      kind="cnn",
      widths=(24, 48, 96),
      width=128,
      image_size=32,
      pool="flatten",
      first_downsample="space_to_depth",
    )
    c.total_steps = 6
    c.data = data.default_config()
    c.data.update(
      source="synthetic",
      image_size=32,
      batch_size=32,
      tokenizer="words",
      max_len=24,
      normalization="inception",
    )
    c.model = models.model_config(image=None, text=None, embed_dim=128, convention="clip")
    c.model.encoders = dict(
      image=demo_image,
      text=dict(
        kind="text",
        width=32,
        depth=1,
        mlp_dim=64,
        num_heads=2,
        vocab_size=data.make_tokenizer(c.data).vocab_size,
        max_len=24,
        causal=False,
        pool="last",
      ),
    )
    c.model.locked = ("image",)
    c.optim.update(lr=1e-3, warmup_steps=2)
    c.checkpoint.update(every_steps=3, keep=2)
    c.eval.update(at_end=False, batch_size=32)
    c.eval.tasks = evaluate.default_tasks(num_examples=64, image_size=32)
    c.log.update(every_steps=2)
  if arg.pretrained:
    _pretrained(c, arg)
    if arg.cpu:  # the checkpoint's model on the built-in data
      c.model.dtype = "float32"
      c.optim.update(warmup_steps=2)
      c.eval.tasks = evaluate.default_tasks(num_examples=64, image_size=c.data.image_size)
  return c


def _pretrained(c, arg):
  """The image tower (and with `text=pretrained` the text tower) of a downloaded checkpoint."""
  ckpt = train_pretrained.settings(arg.pretrained, name=arg.name or None)
  dtype = c.model.dtype
  c.model = ckpt.model_config
  c.model.update(dtype=dtype, locked=("image",))
  c.data = train_pretrained.data_config(ckpt, c.data)
  bias = train_pretrained.uses_bias(c.model)
  c.loss.name = "sigmoid" if bias else "softmax"
  keys = ("image",)
  if arg.text == "pretrained":
    keys = ("image", "text", "log_scale") + (("bias",) if bias else ())
    c.optim.update(lr=1e-5, warmup_steps=500, b2=0.999, weight_decay=0.1)
  c.checkpoint.update(init_from=ckpt.path, init_from_keys=keys, init_from_name=arg.name or None)
