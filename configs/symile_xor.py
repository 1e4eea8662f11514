r"""Three small CNN towers on Symile's XOR data (source `xor`): the higher-order study's runs.

    python -m contrastive.train --config configs/symile_xor.py:loss=symile --workdir runs/symile
    python experiments/claims/symile.py   # symile, gram and pairwise CLIP, scored zero-shot

The data: modalities `a`, `b`, `c = a XOR b` (`contrastive.data.xor`), each a 16-pixel image of
its bits, so that every pair is independent and only the triple carries signal.

Arguments (`configs/symile_xor.py:loss=symile,steps=300,bits=2,seed=0`, the defaults):
  loss: `symile` (the multilinear inner product), `gram` (the volume; `a` is its anchor) or
    `cmc` (CLIP summed over the three pairs, `mode="all_pairs"`: the pairwise baseline).
  steps: train steps.
  batch_size: the global batch.
  bits: the bits per modality (chance is `1 / 2**bits` at predicting `c` from `a` and `b`).
  lr: the peak learning rate.
  seed: the run's seed (initialization and data order; the data itself is fixed).
  runlocal: a few steps of tiny towers (a smoke test); `cpu` is the same (the recipes' name).

No evaluation tasks: the shared ones expect an `image` and a `text` tower; the study scores the
model itself (experiments/claims/symile.py).
"""

from contrastive import data
from contrastive import models
from contrastive.run import config as run_config

LOSSES = ("symile", "gram", "cmc")


def get_config(arg=None):
  arg = run_config.parse_arg(
    arg,
    loss="symile",
    steps=300,
    batch_size=128,
    bits=2,
    lr=2e-3,
    seed=0,
    runlocal=False,
    cpu=False,
  )
  runlocal = arg.runlocal or arg.cpu
  if arg.loss not in LOSSES:
    raise ValueError(f"configs/symile_xor.py: unknown loss {arg.loss!r}; known: {LOSSES}.")
  c = run_config.defaults()  # every trainer key, so each can be overridden
  c.seed = arg.seed
  c.total_steps = arg.steps if not runlocal else 4
  c.mesh.update(data=-1, fsdp=1, tensor=1)

  c.data = data.default_config()
  c.data.source = "xor"
  c.data.image_size = 16
  c.data.batch_size = arg.batch_size if not runlocal else 32
  c.data.normalization = "inception"
  c.data.xor.update(bits=arg.bits, train_size=100_000, test_size=2_000)
  c.data.num_workers = 0

  c.model = models.model_config(image=None, text=None, embed_dim=64, convention="clip")
  tower = dict(kind="cnn", image_size=16, widths=(16, 32), width=64)
  if runlocal:
    tower.update(widths=(8, 16), width=32)
  c.model.encoders = dict(a=dict(tower), b=dict(tower), c=dict(tower))

  c.loss.name = arg.loss
  if arg.loss == "cmc":
    c.loss.mode = "all_pairs"  # an option of the loss: every pair, not the core view

  c.optim.update(
    name="adamw",
    lr=arg.lr,
    schedule="cosine",
    warmup_steps=min(30, c.total_steps),
    end_lr=1e-5,
    b1=0.9,
    b2=0.98,
    eps=1e-6,
    weight_decay=0.0,
    grad_clip_norm=1.0,
  )
  c.checkpoint.update(every_steps=max(c.total_steps, 1), keep=1)
  c.eval.update(at_end=False, report=False)
  c.eval.tasks = {}
  c.log.update(every_steps=50 if not runlocal else 1)
  return c
