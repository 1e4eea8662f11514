r"""Evaluates a checkpoint written by the trainer on the config's `eval.tasks`.

    python -m contrastive.evaluate --config configs/demo.py --workdir runs/demo   # latest
    python -m contrastive.evaluate --workdir runs/demo --checkpoint 400           # its config.json
    python -m contrastive.evaluate --config configs/demo.py --workdir runs/demo \
        --config.eval.tasks.retrieval.source.num_examples=2000 --output runs/demo/eval_2k
    python -m contrastive.evaluate --pretrained /ckpt/clip_vit_b16 --output runs/b16_eval
    python -m contrastive.evaluate --pretrained /ckpt/clip_vit_b16 --image_size 336

Without `--config`, the run's resolved config (`{workdir}/config.json`, written by the trainer)
is used. A workdir without checkpoints is evaluated at initialization (the untrained baseline).
The report (`metrics.json`, `history.jsonl`, PNG plots) goes to `--output`, by default
`{workdir}/eval`. With `--suite NAME` (e.g. `quick`, `imagenet`, `clip`), the standard zero-shot
table is run instead of the config's tasks and written as `table.md` and `table.csv`
(`contrastive.evaluate.suite`; `--pretrained hf-hub:ORG/NAME` reads the Hugging Face cache). The
work is done by `contrastive.evaluate.workdir.evaluate_workdir`, which
reads the run config and the checkpoints through `contrastive.run`, not the trainer. With
`--pretrained PATH` (instead of `--workdir`), an imported checkpoint is evaluated with its own
tokenizer and image settings on `--config`'s eval tasks, or the built-in set without one
(`contrastive.evaluate.pretrained`).
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from contrastive import multihost

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "A config file (`configs/NAME.py[:arg]`); default: {workdir}/config.json.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
_PRETRAINED = flags.DEFINE_string(
  "pretrained",
  None,
  "Instead of --workdir: an imported checkpoint (open_clip, Hugging Face or "
  "big_vision, as downloaded), evaluated on --config's eval tasks (its model is ignored) or on "
  "the built-in set; see contrastive.evaluate.pretrained.",
)
_PRETRAINED_NAME = flags.DEFINE_string(
  "pretrained_name", None, "The architecture where --pretrained does not say (e.g. ViT-B-32)."
)
_IMAGE_SIZE = flags.DEFINE_integer(
  "image_size",
  None,
  "With --pretrained: evaluate at this image size, the learned position table resized the "
  "checkpoint family's way (e.g. 336 for a 224 px CLIP).",
)
_MAX_LEN = flags.DEFINE_integer(
  "max_len", None, "With --pretrained: evaluate at this text length (the table resized)."
)
flags.mark_flags_as_mutual_exclusive(["workdir", "pretrained"], required=True)
_CHECKPOINT = flags.DEFINE_integer("checkpoint", None, "The step to evaluate (default: latest).")
_OUTPUT = flags.DEFINE_string("output", None, "Where the report goes (default {workdir}/eval).")
# The standard zero-shot table (contrastive.evaluate.suite), in place of the config's eval tasks.
_SUITE = flags.DEFINE_string(
  "suite", None, "A suite (imagenet, clip, quick) or dataset names, comma-separated: one table."
)
_SUITE_DATA_DIR = flags.DEFINE_string("suite_data_dir", None, "The tfds data dir of --suite.")
_SUITE_EXAMPLES = flags.DEFINE_integer("suite_examples", None, "Read only the first N of each.")
_FLICKR30K = flags.DEFINE_string("flickr30k", None, "--suite: Flickr30k as an ArrayRecord folder.")
_COMPARE = flags.DEFINE_string("compare", None, "--suite: another run's table.csv, side by side.")
_HOSTS = multihost.define_host_flags()


def _run_config(workdir: str):
  import ml_collections

  from contrastive.run import workdir as workdir_lib

  saved = workdir_lib.saved_config(workdir)
  if saved is None:
    raise FileNotFoundError(
      f"No --config given and no "
      f"{os.path.join(workdir, workdir_lib.CONFIG_FILE)} (written by the "
      "trainer)."
    )
  return ml_collections.ConfigDict(saved)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if (_IMAGE_SIZE.value or _MAX_LEN.value) and not _PRETRAINED.value:
    raise app.UsageError("--image_size and --max_len go with --pretrained.")
  if not flags.FLAGS["stderrthreshold"].present:
    flags.FLAGS.stderrthreshold = "warning"
  # The library is imported here, so that `--help` and flag errors come back without JAX.
  _HOSTS.initialize()
  import jax

  try:
    if _SUITE.value:
      return _run_suite()
    if _PRETRAINED.value:
      from contrastive.evaluate import pretrained

      metrics = pretrained.evaluate_path(
        _PRETRAINED.value,
        _CONFIG.value,
        name=_PRETRAINED_NAME.value,
        output_dir=_OUTPUT.value,
        image_size=_IMAGE_SIZE.value,
        max_len=_MAX_LEN.value,
      )
    else:
      from contrastive.evaluate import workdir

      config = _CONFIG.value if _CONFIG.value is not None else _run_config(_WORKDIR.value)
      metrics = workdir.evaluate_workdir(
        config, _WORKDIR.value, step=_CHECKPOINT.value, output_dir=_OUTPUT.value
      )
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  if jax.process_index() == 0:  # the CLI's output: the one place that prints
    width = max((len(k) for k in metrics), default=0)
    for key in sorted(metrics):
      print(f"{key:<{width}}  {metrics[key]:.4f}")
    output = _OUTPUT.value or (_WORKDIR.value and os.path.join(_WORKDIR.value, "eval"))
    if output:  # --pretrained without --output writes no files
      print(f"Report: {output}/metrics.json and PNG plots.", flush=True)


def _run_suite():
  """`--suite`: the table instead of the config's tasks (contrastive.evaluate.suite)."""
  import jax

  from contrastive.evaluate import suite

  options = dict(
    data_dir=_SUITE_DATA_DIR.value,
    paths={"flickr30k": _FLICKR30K.value} if _FLICKR30K.value else None,
    num_examples=_SUITE_EXAMPLES.value,
    output_dir=_OUTPUT.value,
    compare_with=_COMPARE.value,
  )
  if _PRETRAINED.value:
    rows = suite.run_pretrained(
      _PRETRAINED.value,
      _SUITE.value,
      name=_PRETRAINED_NAME.value,
      image_size=_IMAGE_SIZE.value,
      max_len=_MAX_LEN.value,
      **options,
    )
  else:
    config = _CONFIG.value if _CONFIG.value is not None else _run_config(_WORKDIR.value)
    options["output_dir"] = _OUTPUT.value or os.path.join(_WORKDIR.value, "eval")
    rows = suite.run_workdir(
      config, _WORKDIR.value, _SUITE.value, step=_CHECKPOINT.value, **options
    )
  if jax.process_index() == 0:
    print(suite.markdown(rows), end="", flush=True)
    if options["output_dir"]:
      print(f"Table: {options['output_dir']}/{suite.TABLE_MD} and {suite.TABLE_CSV}.", flush=True)


def _parse_flags(argv):
  # The run config's own parser: a bad config file or override is one line, not a traceback.
  from contrastive.run import overrides

  return overrides.parse_flags(argv)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
