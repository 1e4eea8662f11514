"""The run's console: a tqdm bar or progress lines, and the closing summary."""

import io

from contrastive.train import metrics

SCALARS = {
  "train/loss": 2.5,
  "train/lr": 1e-3,
  "train/examples_per_sec": 1234.0,
  "train/step_time": 0.1,
  "train/data_wait_share": 0.02,
}


def test_lines_mode_writes_the_progress_line_and_messages():
  lines = []
  console = metrics.Progress("lines", total_steps=10, first_step=0, write=lines.append)
  assert console.bar is None
  console.advance()
  console.log(5, SCALARS, elapsed=3.0)
  console.message("eval step 5: zeroshot/top1 0.500")
  console.close()
  assert lines[0].startswith("step  5/10 (50%) | loss 2.5000 | lr 1.00e-03")
  assert lines[1] == "eval step 5: zeroshot/top1 0.500"


def test_auto_is_lines_where_nobody_watches():
  assert not metrics.interactive()  # pytest captures stdout, and IPython is not running
  console = metrics.Progress("auto", total_steps=10, write=lambda line: None)
  assert console.bar is None


def test_bar_mode_counts_steps_from_where_the_run_starts():
  out = io.StringIO()
  console = metrics.Progress("bar", total_steps=10, first_step=4, file=out)
  for _ in range(6):
    console.advance()
  console.log(10, SCALARS)
  console.message("Done.")
  assert console.bar.n == 10 and console.bar.total == 10
  console.close()
  text = out.getvalue()
  assert "10/10" in text and "loss 2.5" in text and "Done." in text


def test_summary_names_the_results_and_where_they_are():
  text = metrics.summary(
    {"train/loss": 1.25, "wall_time": 61.0, "eval/zeroshot_shape/top1": 0.5},
    steps=8,
    workdir="/w",
    checkpoint="/w/checkpoints/8",
  )
  assert text.splitlines() == [
    "Done: 8 steps in 61 s (final loss 1.2500).",
    "Evaluation: eval/zeroshot_shape/top1 0.500",
    "Report: /w/eval/metrics.json and PNG plots.",
    "Checkpoint: /w/checkpoints/8",
    "TensorBoard: tensorboard --logdir /w/tensorboard",
  ]
