r"""Fine-tuning all of an imported CLIP or SigLIP on your own image-text pairs.

    python -m contrastive.train --config configs/finetune.py:pretrained=/ckpt/clip_vit_b16 \
        --workdir runs/ft --config.data.arrayrecord.path=/data/my_pairs
    python -m contrastive.train --config configs/finetune.py:cpu,pretrained=/ckpt/tiny \
        --workdir runs/ft_cpu       # a few steps on the built-in data

`pretrained` is a checkpoint as downloaded (open_clip, Hugging Face `CLIPModel`/`SiglipModel`,
big_vision SigLIP `.npz`; see `models.load_pretrained`). Its model config and data settings are
read when this config is built (`contrastive.train.pretrained.settings`): the model is the
checkpoint's, computed in bfloat16; the data pipeline uses its tokenizer, context length, image
size and normalization; the trainer starts from its weights (`checkpoint.init_from=pretrained`).
Every parameter is trained, the logit scale (and SigLIP's bias) included.

Where the values come from: FLYP (Goyal et al., "Finetune like you pretrain: Improved finetuning
of zero-shot vision models", CVPR 2023, https://arxiv.org/abs/2212.00638; its ImageNet command in
https://github.com/locuslab/FLYP, built on WiSE-FT and open_clip): fine-tune with the loss the
model was pretrained with (here the family's: softmax for CLIP, sigmoid for SigLIP, chosen by
whether the checkpoint has a logit bias), AdamW at learning rate 1e-5 with torch's default betas
(0.9, 0.999) and eps 1e-8, weight decay 0.1, 500 warmup steps and cosine decay to 0, batch 512,
10 epochs (25,000 steps for ImageNet-sized data: set `steps` to 10 epochs of yours), no gradient
clipping; training images through open_clip's train transform, a random resized crop of 90-100%
of the area. Ours: weight decay only on kernels and embedding tables (FLYP decays every
parameter), bfloat16 compute, and the evaluation: zero-shot ImageNet (tfds `imagenet2012`, CLIP's
80 templates and class names; `imagenet=False` drops it) and retrieval on `eval_split` of your
data (empty drops it).

Without `pretrained` the model is OpenAI's CLIP ViT-B/16 architecture, for a config that builds
(the tests) or a `--config.checkpoint.init_from=` given by hand.

Fine-tuning at another resolution than the checkpoint's (`image_size=336` for a 224 px CLIP, as
in open_clip's 336 px models): the learned position table is resized to the new patch grid the
checkpoint family's way (`models.load_pretrained(image_size=)`), and the data pipeline feeds
images of that size.

Arguments: `pretrained=PATH`; `name=NAME` (the open_clip architecture, e.g. `ViT-B-32`, when the
path does not say); `image_size=N` (0: the checkpoint's); `steps=N`; `batch_size=N`;
`eval_split=NAME`; `imagenet=True|False`; `cpu` (the built-in dataset and a few steps; a tiny
random model without `pretrained`).
"""

from ml_collections import config_dict

from contrastive import data
from contrastive import evaluate
from contrastive import models
from contrastive.run import config as run_config
from contrastive.train import pretrained as train_pretrained


def get_config(arg=None):
  arg = run_config.parse_arg(
    arg,
    pretrained="",
    name="",
    image_size=0,
    steps=25_000,
    batch_size=512,
    eval_split="val",
    imagenet=True,
    cpu=False,
  )
  c = run_config.defaults()  # every trainer key, so each can be overridden
  c.seed = 0
  c.total_steps = arg.steps
  c.mesh.update(data=-1, fsdp=1, tensor=1)

  c.data = data.default_config()
  c.data.source = "arrayrecord"
  c.data.arrayrecord.path = config_dict.placeholder(str)  # required
  c.data.batch_size = arg.batch_size
  c.data.random_resized_crop = True
  c.data.crop_scale = (0.9, 1.0)
  c.data.num_workers = 8
  c.data.read_threads = 16

  if arg.pretrained:
    ckpt = train_pretrained.settings(
      arg.pretrained, name=arg.name or None, image_size=arg.image_size or None
    )
    c.model = ckpt.model_config
    c.data = train_pretrained.data_config(ckpt, c.data)
    c.checkpoint.update(init_from=ckpt.path, init_from_name=arg.name or None)
  else:
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
    c.data.update(tokenizer="clip", max_len=77, image_size=224, normalization="clip")
    if arg.image_size:
      c.model.encoders.image.image_size = arg.image_size
      c.data.image_size = arg.image_size
  c.model.dtype = "bfloat16"  # compute; parameters, loss and optimizer stay float32
  c.model.locked = ()

  c.loss.name = "sigmoid" if train_pretrained.uses_bias(c.model) else "softmax"
  c.optim.update(
    name="adamw",
    lr=1e-5,
    schedule="cosine",
    warmup_steps=500,
    end_lr=0.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=0.1,
    grad_clip_norm=None,
  )

  c.checkpoint.update(every_steps=1_000, keep=3)
  tasks = {}
  if arg.imagenet:
    tasks["imagenet"] = dict(
      kind="zeroshot",
      class_names="imagenet",
      templates="imagenet80",
      source=dict(
        name="tfds",
        dataset="imagenet2012",
        split="validation",
        data_dir=config_dict.placeholder(str),
      ),
    )
  if arg.eval_split:
    tasks["retrieval"] = dict(
      kind="retrieval", source=dict(name="data", split=arg.eval_split, num_examples=5_000)
    )
  c.eval.update(every_steps=2_500, at_end=True, batch_size=512, report=True, tasks=tasks)
  c.log.update(every_steps=50)

  if arg.cpu:
    _cpu(c, pretrained=bool(arg.pretrained))
  return c


def _cpu(c, *, pretrained: bool):
  """A few steps on the built-in data (the tests' version)."""
  c.total_steps = 6
  c.data.update(source="synthetic", batch_size=16, num_workers=0, read_threads=1)
  if not pretrained:
    c.data.update(image_size=32, tokenizer="bytes", max_len=64)
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
  c.model.dtype = "float32"
  c.optim.update(warmup_steps=2)
  c.checkpoint.update(every_steps=3, keep=2)
  c.eval.update(at_end=False, batch_size=16)
  c.eval.tasks = evaluate.default_tasks(num_examples=32, image_size=int(c.data.image_size))
  c.log.update(every_steps=2)
