r"""CoCa (Yu et al., 2022): a contrastive loss plus a captioning decoder's, at CoCa's sizes.

    python -m contrastive.train --config configs/coca.py:B/32 --workdir gs://BUCKET/coca_b32 \
        --config.data.arrayrecord.path=/data/laion2b
    python -m contrastive.train --config configs/coca.py:cpu --workdir runs/coca_cpu

The objective (https://arxiv.org/abs/2205.01917, section 3.2): `L = lambda_con L_con +
lambda_cap L_cap` with lambda_cap = 2, lambda_con = 1; L_con is CLIP's softmax loss on the
attentional pooler's image embedding and the text tower's class token, L_cap the decoder's token
cross-entropy, teacher-forced (`loss.terms.caption`). The architecture is open_clip's CoCa
(`coca_ViT-B-32`, `coca_ViT-L-14`: `models.coca_config`), so open_clip's pretrained weights
load into it (`models.load_pretrained`): a ViT whose 256 attentional-pooler queries give the
decoder's image tokens and (the first) the contrastive embedding; a causal text tower with a
class token appended; a multimodal decoder of causal self-attention layers that cross-attend to
the image tokens; 76 BPE tokens, CLIP's 49,408-token vocabulary.

From the paper (section 4.1): batch 65,536; Adafactor with beta1 0.9, beta2 0.999, decoupled
weight decay 0.01; learning rate 8e-4 after a warmup of the first 2% of the steps, then a linear
decay; 500k steps. Label smoothing of the captioning loss: none in the paper; open_clip's CoCa
training uses 0.0 too.

Not in the paper (our choices): AdamW with the paper's betas in place of its Adafactor
(`--config.optim.name=adafactor` is optax's factored second moment without a first moment, not
the paper's beta1 0.9), open_clip's 224-pixel images (the
paper pretrains at 288 with patch 18), gradient clipping at 1.0, the dataset (JFT-3B and ALIGN
are private: point `data.arrayrecord.path` at shards built by `python -m contrastive.data.build`)
and the evaluation.

Arguments: `B/32` (default) or `L/14`; `cpu` swaps in a CPU-sized CoCa and the built-in data for
a few steps (what the tests run); `batch_size=N` overrides the global batch.
"""

from ml_collections import config_dict

from contrastive import data
from contrastive import evaluate
from contrastive import models
from contrastive.run import config as run_config

CAPTION_WEIGHT = 2.0  # lambda_cap; lambda_con = 1 (loss.weight)


def get_config(arg=None):
  variant = "B/32"
  if arg and arg.split(",")[0] in ("B/32", "L/14"):
    variant, _, arg = arg.partition(",")
  arg = run_config.parse_arg(arg, cpu=False, batch_size=65_536)
  c = run_config.defaults()  # every trainer key, so each can be overridden
  c.seed = 0
  c.total_steps = 500_000
  c.mesh.update(data=-1, fsdp=1, tensor=1)

  c.data = data.default_config()
  c.data.source = "arrayrecord"
  c.data.arrayrecord.path = config_dict.placeholder(str)  # required: --config.data.arrayrecord.path
  c.data.image_size = 224
  c.data.batch_size = arg.batch_size
  c.data.tokenizer = "clip"  # OpenAI's BPE, shipped in the package (open_clip's ids)
  c.data.max_len = 76  # open_clip's CoCa context length; the text tower appends its class token
  c.data.normalization = "clip"
  c.data.random_resized_crop = True
  c.data.crop_scale = (0.9, 1.0)
  c.data.num_workers = 8
  c.data.read_threads = 16

  c.model = models.coca_config(variant)
  c.model.dtype = "bfloat16"  # compute; parameters, loss and optimizer stay float32

  c.loss.name = "softmax"
  c.loss.weight = 1.0
  c.loss.terms = dict(caption=dict(name="caption", weight=CAPTION_WEIGHT, label_smoothing=0.0))

  c.optim.update(
    name="adamw",
    lr=8e-4,
    schedule="linear",
    warmup_steps=10_000,  # 2% of 500k
    end_lr=0.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=0.01,
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
  tokenizer = "words_bos"  # the built-in vocabulary with a start id, as CLIP's BPE has
  c.data.update(
    source="synthetic",
    image_size=32,
    batch_size=32,
    tokenizer=tokenizer,
    max_len=24,
    normalization="clip",
  )
  vocab = data.make_tokenizer(tokenizer).vocab_size
  c.model = models.coca_config("mu", image_size=32, vocab_size=vocab, max_len=24, pool_queries=8)
  c.optim.update(lr=1e-3, warmup_steps=2, schedule="cosine")
  c.checkpoint.update(every_steps=3, keep=2)
  c.eval.update(at_end=False, batch_size=32)
  c.eval.tasks = evaluate.default_tasks(num_examples=64, image_size=32)
  c.log.update(every_steps=2)
