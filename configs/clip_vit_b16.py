r"""CLIP ViT-B/16 (Radford et al., 2021): the published recipe, for a TPU pod or a GPU host.

    python -m contrastive.train --config configs/clip_vit_b16.py --workdir gs://BUCKET/clip_b16 \
        --config.data.arrayrecord.path=/data/laion400m --config.data.tokenizer=/data/clip_bpe.json
    python -m contrastive.train --config configs/clip_vit_b16.py:cpu --workdir runs/clip_cpu

From the paper (https://arxiv.org/abs/2103.00020, section 2.5 and Tables 19-20): batch 32,768;
32 epochs of the 400M-pair WIT dataset (= 390,625 steps); AdamW with beta1 0.9, beta2 0.98, eps
1e-6, weight decay 0.2 (not on gains, biases, scale); learning rate 5e-4 with 2,000 warmup steps
and cosine decay; temperature initialized at 0.07, the logit scale clipped at 100; mixed
precision; ViT-B/16 image tower (width 768, 12 layers, 12 heads, `ln_pre`, class token,
QuickGELU) and a 12-layer, 512-wide, 8-head causal text transformer over 76 BPE tokens
(+ end) with a 49,408-token vocabulary; joint embedding 512.

Not in the paper (our choices, change them freely): gradient clipping at 1.0 (open_clip's
common setting), the dataset (WIT is private: point `data.arrayrecord.path` at shards built by
`python -m contrastive.data.build`, e.g. from LAION-400M or DataComp webdataset tars), and the
evaluation (ImageNet zero-shot through tfds, `imagenet2012` prepared in ArrayRecord).

Arguments: `cpu` swaps in a CPU-sized model and the built-in dataset for a few steps (what the
tests run); `batch_size=N` overrides the global batch.
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
  c.total_steps = 390_625  # 32 epochs x 400M pairs / 32,768
  c.mesh.update(data=-1, fsdp=1, tensor=1)  # B/16 fits data parallel; FSDP: mesh.fsdp=N

  c.data = data.default_config()
  c.data.source = "arrayrecord"
  c.data.arrayrecord.path = config_dict.placeholder(str)  # required: --config.data.arrayrecord.path
  c.data.image_size = 224
  c.data.batch_size = arg.batch_size
  c.data.tokenizer = "clip_bpe.json"  # a Hugging Face tokenizers file with CLIP's 49,408 BPE
  c.data.max_len = 77
  c.data.normalization = "clip"
  c.data.random_resized_crop = True
  c.data.crop_scale = (0.9, 1.0)
  c.data.num_workers = 8
  c.data.read_threads = 16

  c.model = models.model_config(
    image="B/16",
    text="CLIP-B",
    image_size=224,
    vocab_size=49_408,
    max_len=77,
    embed_dim=512,
    convention="clip",
  )
  c.model.encoders.image.update(
    pool="cls", pre_norm=True, act="quick_gelu", patch_bias=False, norm_eps=1e-5
  )
  c.model.encoders.text.update(causal=True, pool="eot", act="quick_gelu", norm_eps=1e-5)
  c.model.dtype = "bfloat16"  # compute; parameters, loss and optimizer stay float32

  c.loss.name = "softmax"

  c.optim.update(
    name="adamw",
    lr=5e-4,
    schedule="cosine",
    warmup_steps=2_000,
    end_lr=0.0,
    b1=0.9,
    b2=0.98,
    eps=1e-6,
    weight_decay=0.2,
    grad_clip_norm=1.0,
  )

  c.checkpoint.update(every_steps=2_000, keep=3)
  c.eval.update(
    every_steps=10_000,
    at_end=True,
    batch_size=1_024,
    report=True,
    tasks=dict(
      # CLIP's protocol: OpenAI's cleaned class names and its 80 prompt templates.
      imagenet=dict(
        kind="zeroshot",
        class_names="imagenet",
        templates="imagenet80",
        source=dict(name="tfds", dataset="imagenet2012", split="validation"),
      )
    ),
  )
  c.log.update(every_steps=100)

  if arg.cpu:
    _cpu(c)
  return c


def _cpu(c):
  """The same recipe shrunk to run a few steps on a CPU (the tests' version)."""
  c.total_steps = 6
  c.data = data.default_config()
  c.data.update(
    source="synthetic",
    image_size=32,
    batch_size=32,
    tokenizer="bytes",
    max_len=64,
    normalization="clip",
  )
  c.model = models.model_config(
    image="mu/8",
    text="mu",
    image_size=32,
    vocab_size=data.ByteTokenizer.vocab_size,
    max_len=64,
    embed_dim=32,
    convention="clip",
  )
  c.model.encoders.image.update(pool="cls", pre_norm=True, act="quick_gelu", patch_bias=False)
  c.model.encoders.text.update(causal=True, pool="last", act="quick_gelu")
  c.optim.update(lr=1e-3, warmup_steps=2)
  c.checkpoint.update(every_steps=3, keep=2)
  c.eval.update(at_end=False, batch_size=32)
  c.eval.tasks = evaluate.default_tasks(num_examples=64, image_size=32)
  c.log.update(every_steps=2)
