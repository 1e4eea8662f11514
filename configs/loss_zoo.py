r"""The demo with any loss of the zoo: one CPU-sized config per loss family.

    python -m contrastive.train --config configs/loss_zoo.py:loss=dcl --workdir runs/dcl
    python -m contrastive.train --config configs/loss_zoo.py:loss=hard_negative,steps=600 \
        --workdir runs/hard_negative

Arguments (`configs/loss_zoo.py:loss=NAME,steps=N,runlocal`):
  loss: a loss below (each family's options are set to the paper's defaults).
  steps, batch_size: as in configs/demo.py.
  runlocal: a few steps of a tiny model (what the tests run).

Losses that need data the built-in dataset does not have (a frozen or teacher modality for
`cwcl`/`distill`, mixup partners for `m3col`, multi-hot finding labels for `medclip`) are not
here: they run from Python with the side data given (see the loss table in docs/losses.md).
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
  # CACR's authors' weights (alpha = beta = tau_neg = 1); no logit scale.
  "cacr": ({}, {}),
  # The generator's compositional negatives (attribute swap, relation swap, attribute change),
  # embedded by the text tower, as extra negatives of each image.
  "hard_negative": (
    {"side_inputs": {"neg_y": {"modality": "text", "batch_key": "hard_negatives"}}},
    {"hard_negatives": True},
  ),
  # The n-modal losses with the two modalities of the built-in data (k = 2).
  "symile": ({}, {}),
  "gram": ({}, {}),
  # GRAM's whole objective: the matching term (first, so the model learns its bias) and the
  # volume contrastive term with the authors' label smoothing.
  "gram_itm": ({"terms": {"volume": {"name": "gram", "label_smoothing": 0.1}}}, {}),
  "mv_infonce": ({}, {}),
  "mv_dhel": ({}, {}),
  # The centroid of the image and the text embedding of each pair (V = 2), t = 2.
  "decoupled_uniformity": ({}, {}),
  # G-PVC; with k = 2 it is NT-Xent over the 2B embeddings (intra-modal negatives included).
  "poly_view": ({"aggregate": "geometric"}, {}),
  "cmc": ({"mode": "all_pairs"}, {}),
  # Several positives per anchor: examples of the same meaning (the batch's `meaning_id`, as
  # it is) are positives of each other.
  "supcon": ({"side_inputs": {"labels": {"batch_key": "meaning_id"}}}, {}),
  "multi_positive": ({"side_inputs": {"labels": {"batch_key": "meaning_id"}}}, {}),
  # MCL's second stage with a stand-in for the first stage's clusters: the number of objects in
  # the scene (1-3, the batch's `num_objects`), so an anchor's negatives are the scenes of its
  # own count. A real run clusters stage 1's embeddings (docs/losses.md, "MCL: stages").
  "mcl": ({"side_inputs": {"labels": {"batch_key": "num_objects"}}}, {}),
  # AMCL, model-free: the 128-d embedding is 3 heads of 40 and 8 channels of temperature
  # features (x16, so a chunk's share of a unit vector spans the sigmoid); the authors' beta and
  # temperature range; the hardest 64 of 255 negatives (theirs: 100 of 510; a smaller batch
  # takes all of its negatives).
  "amcl": (
    {
      "num_heads": 3,
      "phi_dim": 8,
      "phi_scale": 16.0,
      "top_k": 64,
      "beta": 0.01,
      "tau_min": 1e-5,
      "tau_max": 2.0,
    },
    {},
  ),
  # A momentum (EMA) key encoder and a queue of its past keys per modality, carried in the
  # train state (contrastive/train/momentum.py). MoCo's queue of 65536 and m = 0.999 are for
  # runs of ~10^5 steps; a 600-step demo needs a key encoder that keeps up (m = 0.99, a time
  # constant of 100 steps) and a queue of 16 batches of 256.
  "moco": ({"queue_size": 4096, "momentum": 0.99}, {}),
  # MoCo's recipe plus hard negative mixing: the paper's N, s, s' of ~1024, 1024, 512 for a
  # queue of 16-65k, scaled by 1/16 to the queue of 4096.
  "mochi": (
    {"queue_size": 4096, "momentum": 0.99, "num_hard": 64, "num_mix": 64, "num_query_mix": 32},
    {},
  ),
  # A temperature per example and modality, learned from a per-example state carried in the
  # train state (contrastive/train/example_state.py), the authors' defaults. The state only
  # pays off when examples come back: 16,384 training records, ~9 visits each in 600 steps.
  # Their rho = 8 exceeds log(B - 1) = 5.5 at batch 256, so every temperature ends at tau_min;
  # `loss.rho=4` spreads them (experiments/results/claims/isogclr.md).
  "isogclr": ({}, {"synthetic": {"train_size": 16384}}),
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
  if arg.loss == "gram_itm":
    c.model.bias_init = 0.0  # the matching logit's bias; the scale keeps CLIP's convention
  return c
