r"""The demo with any loss of the zoo: one CPU-sized config per loss family.

    python -m contrastive.train --config configs/loss_zoo.py:loss=dcl --workdir runs/dcl
    python -m contrastive.train --config configs/loss_zoo.py:loss=hard_negative,steps=600 \
        --workdir runs/hard_negative

Arguments (`configs/loss_zoo.py:loss=NAME,steps=N,runlocal`):
  loss: a loss below (each family's options are set to the paper's defaults).
  steps, batch_size: as in configs/demo.py.
  runlocal: a few steps of a tiny model (what the tests run).

Losses that need data the built-in dataset does not have (a frozen or teacher modality for
`cwcl`/`distill`, mixup partners for `m3col`) are not here: they run from Python with the side
data given (see the loss table in docs/losses.md).
"""

import importlib.util
import pathlib

# loss name -> (the options of `config.loss`, the changes of `config.data`).
FAMILIES = {
  "softmax": ({}, {}),
  "sigmoid": ({}, {}),
  "dcl": ({}, {}),
  "dclw": ({"sigma": 0.5}, {}),
  "align_uniform": ({}, {}),
  "contrastive_gap": ({"variant": "cuaxu"}, {}),
  "sigmoid_focal": ({"gamma": 1.0}, {}),
  "softmax_focal": ({"gamma": 2.0}, {}),
  "macl": ({}, {}),
  "auc_mw": ({}, {}),
  "kernel_infonce": ({}, {}),
  # The generator's compositional negatives (attribute swap, relation swap, attribute change),
  # embedded by the text tower, as extra negatives of each image.
  "hard_negative": (
    {"side_inputs": {"neg_y": {"modality": "text", "batch_key": "hard_negatives"}}},
    {"hard_negatives": True},
  ),
  # The n-modal losses with the two modalities of the built-in data (k = 2).
  "symile": ({}, {}),
  "gram": ({}, {}),
  "mv_infonce": ({}, {}),
  "mv_dhel": ({}, {}),
  "cmc": ({"mode": "all_pairs"}, {}),
  # Several positives per anchor: examples of the same meaning (the batch's `meaning_id`, as
  # it is) are positives of each other.
  "supcon": ({"side_inputs": {"labels": {"batch_key": "meaning_id"}}}, {}),
  "multi_positive": ({"side_inputs": {"labels": {"batch_key": "meaning_id"}}}, {}),
  # A momentum (EMA) key encoder and a queue of its past keys per modality, carried in the
  # train state (contrastive/train/momentum.py). MoCo's queue of 65536 and m = 0.999 are for
  # runs of ~10^5 steps; a 600-step demo needs a key encoder that keeps up (m = 0.99, a time
  # constant of 100 steps) and a queue of 16 batches of 256.
  "moco": ({"queue_size": 4096, "momentum": 0.99}, {}),
}


def _demo():
  """configs/demo.py, beside this file (from any working directory)."""
  spec = importlib.util.spec_from_file_location(
    "configs_demo", pathlib.Path(__file__).with_name("demo.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  from contrastive import models
  from contrastive.run import config as run_config

  arg = run_config.parse_arg(arg, loss="dcl", steps=600, batch_size=256, runlocal=False)
  if arg.loss not in FAMILIES:
    raise ValueError(
      f"configs/loss_zoo.py: unknown loss {arg.loss!r}; known: {', '.join(sorted(FAMILIES))}."
    )
  options, data_changes = FAMILIES[arg.loss]
  c = _demo().get_config(f"steps={arg.steps},batch_size={arg.batch_size},runlocal={arg.runlocal}")
  c.loss.name = arg.loss
  c.loss.update(options)
  c.data.update(data_changes)
  if c.model.convention == "clip" and arg.loss in ("sigmoid", "sigmoid_focal"):
    c.model.convention = "siglip"  # the learned bias and SigLIP's scale initialization
    # The bias starts at the prior of a positive in this batch, -log(B - 1) (-4.8 at 128), not
    # SigLIP's -10 (the prior at its 32k batch): from -10, a run of a few hundred steps at a
    # small batch collapses on some seeds (docs/losses.md, "SigLIP at a small batch").
    c.model.bias_init = models.towers.prior_bias(c.data.batch_size)
  return c
