r"""The demo: a tiny CLIP on the built-in shapes dataset, trained and evaluated in minutes on a CPU.

    python -m contrastive.train --config configs/demo.py --workdir runs/demo

The recipe:
  model: a plain CNN of 0.25M parameters on 32-pixel images (2x2 pixel blocks folded into
    channels, then three stages of a 3x3 convolution, the last two with a 2x2 max-pool; the final
    4x4 grid flattened, so that where things are survives) and a 0.16M-parameter causal text
    transformer over the built-in dataset's 46-word vocabulary (`words` tokenizer), joint
    embedding 128, CLIP's scale initialization.
  loss: softmax (CLIP) over the ring. For SigLIP's sigmoid loss use
    `configs/loss_zoo.py:loss=sigmoid`: SigLIP's scale 10 with the bias started at the prior of
    a positive in the batch, -log(B - 1) (-4.8 at 128), not SigLIP's -10, from which short runs
    collapse on some seeds (docs/losses.md, "SigLIP at a small batch").
  optimizer: AdamW with CLIP's b1 0.9, b2 0.98, eps 1e-6 and weight decay 0.2 (Radford et al.,
    2021), gradient clipping at 1.0 (open_clip's common setting); lr 3e-3, 50 warmup steps, cosine
    decay to 1e-5; 1,100 steps at batch 128.
  data: the built-in shapes dataset; two thirds of the training images show one object (the
    rest two or three), so that shape, which an object among others shows in few pixels, is a
    large share of what tells captions apart; records come in contrast pairs
    (`shape_variants=2`: a scene, then the same scene with one object's shape changed, in the
    same batch), so every image and caption has a negative that only a shape tells apart.
  evaluation, at the end, on held-out data: zero-shot shape, colour and count (shape and colour
    with the marginal prompt ensemble over the other attributes, `ensemble="marginal"`, also on
    (colour, shape) pairs never seen in training), image<->text retrieval (exact pairs, and with
    a hit of the same meaning counted), compositional binding and the embedding geometry; the
    report lands in `{workdir}/eval/`.

Where the values come from: the optimizer's betas, epsilon and weight decay are CLIP's; the
towers' sizes, the learning rate and schedule, the step count, the share of one-object images
and the contrast pairs are our choices for a run of a few minutes on a CPU, each picked by
comparing full demo runs on held-out data (the runs and their figures:
experiments/results/demo_tuning.md; docs/training.md describes the demo).

Arguments (`configs/demo.py:steps=1100,batch_size=128`, the defaults):
  steps: train steps.
  batch_size: the global batch.
  hard_negatives: train with each caption's three compositional hard negatives as extra
    negatives (loss `hard_negative`; the text tower also embeds the three negatives).
  eval_examples: images per evaluation task (1,000 test pairs for retrieval).
  max_objects: at most this many objects per image (1 to 3), in training and in the test pairs.
  one_object_weight: how much more often a training image shows one object than each other
    count (`data.synthetic.object_weights`; the test pairs draw the counts uniformly).
  image_tower: `cnn` or `vit` (a 0.53M-parameter ViT with a convolutional stem down to a 4x4
    token grid).
  shape_variants: train on contrast sets of this many records that differ only in one
    object's shape (`data.synthetic.shape_variants`; 1: off; the batch must divide by it).
  objective: `contrastive` (CLIP's loss alone) or `coca`: CoCa's objective, the softmax loss
    plus twice a captioning decoder's token cross-entropy (`configs/coca.py`), on a CoCa model
    of the demo's sizes (the ViT image tower, whose tokens the decoder reads; an attentional
    pooler of 16 queries; a 2-layer multimodal decoder) and the `words_bos` tokenizer (the
    built-in vocabulary with a start id, which a decoder needs).
  runlocal: a few steps of a smaller model, no evaluation report (for a smoke test).
"""

from contrastive import data
from contrastive import evaluate
from contrastive import models
from contrastive.run import config as run_config

OBJECTIVES = ("contrastive", "coca")


def get_config(arg=None):
  arg = run_config.parse_arg(
    arg,
    steps=1100,
    batch_size=128,
    eval_examples=1000,
    hard_negatives=False,
    max_objects=3,
    one_object_weight=4,
    shape_variants=2,
    image_tower="cnn",
    objective="contrastive",
    runlocal=False,
  )
  c = run_config.defaults()  # every trainer key, so each can be overridden
  c.seed = 0
  c.total_steps = arg.steps if not arg.runlocal else 4
  c.mesh.update(data=-1, fsdp=1, tensor=1)

  c.data = data.default_config()
  c.data.source = "synthetic"
  c.data.image_size = 32
  c.data.batch_size = arg.batch_size if not arg.runlocal else 32
  c.data.tokenizer = "words"  # the built-in vocabulary: 5 times fewer tokens than bytes
  c.data.max_len = 24  # the longest built-in caption is 23 words, plus end-of-text
  c.data.normalization = "inception"
  c.data.synthetic.update(
    train_size=200_000,
    max_objects=arg.max_objects,
    shape_variants=arg.shape_variants,
    object_weights=(arg.one_object_weight,) + (1,) * (arg.max_objects - 1),
  )
  c.data.num_workers = 1  # drawing the shapes in a second process hides it behind the step

  c.model = models.model_config(image=None, text=None, embed_dim=128, convention="clip")
  towers = dict(
    cnn=dict(
      kind="cnn",
      widths=(24, 48, 96),
      width=128,
      image_size=32,
      pool="flatten",
      first_downsample="space_to_depth",
    ),
    vit=dict(
      kind="vit",
      width=128,
      depth=3,
      mlp_dim=256,
      num_heads=4,
      patch_size=8,
      image_size=32,
      pool="cls",
      posemb="learn",
      stem="conv",
    ),
  )
  if arg.image_tower not in towers:
    raise ValueError(f"image_tower must be one of {sorted(towers)}, got {arg.image_tower!r}.")
  c.model.encoders = dict(
    image=towers[arg.image_tower],
    text=dict(
      kind="text",
      width=96,
      depth=2,
      mlp_dim=192,
      num_heads=4,
      vocab_size=data.make_tokenizer(c.data).vocab_size,
      max_len=24,
      causal=True,
      pool="last",
    ),  # end of text is not the largest id: pool by position
  )
  if arg.runlocal:
    c.model.encoders.image.update(
      dict(widths=(8, 16, 32), width=32)
      if arg.image_tower == "cnn"
      else dict(width=32, depth=1, mlp_dim=64, num_heads=2)
    )
    c.model.encoders.text.update(width=32, depth=1, mlp_dim=64, num_heads=2)

  c.loss.name = "softmax"
  if arg.hard_negatives:
    # NegCLIP-style: each image's caption also competes with its three compositional hard
    # negatives (attribute swap, relation swap, attribute change), embedded by the text tower.
    c.data.hard_negatives = True
    c.loss.name = "hard_negative"
    c.loss.side_inputs = dict(neg_y=dict(modality="text", batch_key="hard_negatives"))

  if arg.objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {arg.objective!r}.")

  c.optim.update(
    name="adamw",
    lr=3e-3,
    schedule="cosine",
    warmup_steps=50,
    end_lr=1e-5,
    b1=0.9,
    b2=0.98,
    eps=1e-6,
    weight_decay=0.2,
    grad_clip_norm=1.0,
  )

  c.checkpoint.update(every_steps=200, keep=2)

  n = arg.eval_examples if not arg.runlocal else 64
  tasks = evaluate.default_tasks(num_examples=n, image_size=32, seed=0, num_heldout=8)
  for task in tasks.values():  # the test pairs show as many objects as training did
    if task.source.split == "test":
      task.source.max_objects = arg.max_objects
  test = dict(tasks.retrieval.source)
  # Exact pairs (a caption retrieves its own image; `retrieval` also counts the same meaning).
  tasks.retrieval_exact = dict(kind="retrieval", source=test, subset_key="heldout")
  # Zero-shot on objects whose (colour, shape) never occurred in training.
  for view in ("shape", "colour"):
    tasks[f"zeroshot_{view}_heldout"] = dict(
      kind="zeroshot",
      ensemble="marginal",
      source=dict(
        name="synthetic_subset",
        split=view,
        num_examples=max(n // 2, 32),
        image_size=32,
        seed=0,
        num_heldout=8,
      ),
    )
  c.eval.update(at_end=True, batch_size=256 if not arg.runlocal else 32, report=not arg.runlocal)
  c.eval.tasks = tasks
  c.log.update(every_steps=50 if not arg.runlocal else 1)
  if arg.objective == "coca":
    _coca(c, towers["vit"], runlocal=arg.runlocal)
  return c


def _coca(c, vit, *, runlocal: bool) -> None:
  """CoCa's objective on a CoCa of the demo's sizes (`objective=coca`)."""
  c.data.tokenizer = "words_bos"
  vocab = data.make_tokenizer(c.data).vocab_size
  c.model = models.coca_config("mu", image_size=32, vocab_size=vocab, max_len=c.data.max_len)
  small = dict(width=32, depth=1, mlp_dim=64, num_heads=2) if runlocal else {}
  image = {k: v for k, v in vit.items() if k != "pool"}  # the pooler replaces the class token
  c.model.encoders.image = dict(image, pre_norm=False, cls_posemb=False, **small)
  text = {**dict(width=96, depth=2, mlp_dim=192, num_heads=4), **small}
  c.model.encoders.text.update(text, variant=None)
  c.model.decoder.update(text, variant=None, pool_queries=16, pool_heads=small.get("num_heads", 4))
  c.model.embed_dim = 128
  c.loss.terms = dict(caption=dict(name="caption", weight=2.0))  # CoCa's lambda_cap
  # Greedy captions of the test pairs, on seen and held-out (colour, shape) combinations.
  c.eval.tasks.caption = dict(
    kind="caption", source=dict(c.eval.tasks.retrieval.source), subset_key="heldout"
  )
