r"""SigLIP ViT-B/16 (Zhai et al., 2023): the sigmoid loss recipe, for a TPU pod or a GPU host.

    python -m contrastive.train --config configs/siglip_vit_b16.py --workdir gs://BUCKET/siglip \
        --config.data.arrayrecord.path=/data/webli_like --config.data.tokenizer=/data/c4_32k.model
    python -m contrastive.train --config configs/siglip_vit_b16.py:cpu --workdir runs/siglip_cpu

From the paper (https://arxiv.org/abs/2303.15343) and big_vision's SigLIP configs: batch 32k
(32,768); the sigmoid loss with learnable temperature `t' = log 10` and bias `b = -10`;
Adam-style optimizer with beta2 0.95 (for stability at large batch), learning rate 1e-3, weight
decay 1e-4; ViT-B/16 with a multi-head attention-pooling (MAP) head, GELU (tanh), no `ln_pre`;
a B-sized (768-wide, 12-layer) bidirectional text transformer over 16 SentencePiece tokens
(32k vocabulary, trained on C4), pooled at the last token; joint embedding 768; the loss over
all devices without gathering the similarity matrix (here: the ring).

The bias starts at the paper's -10, the prior of a positive (`sigma(b) = 1/B`) at about 22k; with
`batch_size=N` other than 32k it starts at that batch's prior, `-log(N - 1)`
(`models.towers.prior_bias`), and so does the `cpu` run: from -10, short runs at small batches
collapse on some seeds (docs/losses.md, "SigLIP at a small batch").

Our choices where the paper leaves it open (check them against your budget): 9B examples seen
(274,658 steps at 32k), 5% linear warmup then cosine decay, gradient clipping at 1.0, bfloat16
compute, and the evaluation (ImageNet zero-shot through tfds).

Arguments: `cpu` (a CPU-sized model on the built-in data for a few steps, as the tests run it);
`batch_size=N`.
"""

from ml_collections import config_dict

from contrastive import data
from contrastive import evaluate
from contrastive import models
from contrastive.run import config as run_config


def get_config(arg=None):
  arg = run_config.parse_arg(arg, cpu=False, batch_size=32_768)
  c = run_config.defaults()  # every trainer key, so each can be overridden
  c.seed = 0
  c.total_steps = 274_658  # 9B examples / 32,768
  c.mesh.update(data=-1, fsdp=1, tensor=1)

  c.data = data.default_config()
  c.data.source = "arrayrecord"
  c.data.arrayrecord.path = config_dict.placeholder(str)  # required
  c.data.image_size = 224
  c.data.batch_size = arg.batch_size
  c.data.tokenizer = "c4_en_32k.model"  # a SentencePiece model, 32k vocabulary
  c.data.max_len = 16
  c.data.normalization = "inception"  # [-1, 1], as big_vision
  c.data.num_workers = 8
  c.data.read_threads = 16

  c.model = models.model_config(
    image="B/16",
    text="B",
    image_size=224,
    vocab_size=32_000,
    max_len=16,
    embed_dim=768,
    convention="siglip",
  )
  c.model.encoders.image.update(pool="map", act="gelu_tanh", posemb="learn", proj_bias=True)
  c.model.encoders.text.update(causal=False, pool="last", act="gelu_tanh", proj_bias=True)
  c.model.dtype = "bfloat16"
  if arg.batch_size != 32_768:
    c.model.bias_init = models.towers.prior_bias(arg.batch_size)

  c.loss.name = "sigmoid"

  c.optim.update(
    name="adamw",
    lr=1e-3,
    schedule="cosine",
    warmup_steps=13_733,
    end_lr=0.0,
    b1=0.9,
    b2=0.95,
    eps=1e-8,
    weight_decay=1e-4,
    grad_clip_norm=1.0,
  )

  c.checkpoint.update(every_steps=2_000, keep=3)
  c.eval.update(
    every_steps=10_000,
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
    c.total_steps = 6
    c.data = data.default_config()
    c.data.update(
      source="synthetic",
      image_size=32,
      batch_size=32,
      tokenizer="bytes",
      max_len=64,
      normalization="inception",
    )
    c.model = models.model_config(
      image="mu/8",
      text="mu",
      image_size=32,
      vocab_size=data.ByteTokenizer.vocab_size,
      max_len=64,
      embed_dim=32,
      convention="siglip",
    )
    c.model.encoders.image.update(pool="map", act="gelu_tanh", proj_bias=True)
    c.model.encoders.text.update(causal=False, pool="last", act="gelu_tanh", proj_bias=True)
    c.model.bias_init = models.towers.prior_bias(c.data.batch_size)
    c.optim.update(lr=1e-3, warmup_steps=2)
    c.checkpoint.update(every_steps=3, keep=2)
    c.eval.update(at_end=False, batch_size=32)
    c.eval.tasks = evaluate.default_tasks(num_examples=64, image_size=32)
    c.log.update(every_steps=2)
  return c
