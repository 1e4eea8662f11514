"""The trainer CLI with one more loss, `nan_test`, whose value and gradients are NaN.

    python tests/train/nan_loss_train.py --config ... --workdir ... --config.loss.name=nan_test

Used to inject a non-finite loss into a real run (registered here, in the trainer's process).
"""

import runpy

import jax.numpy as jnp

from contrastive import losses


def _nan(embeddings, scale, bias, side, **kwargs):
  del bias, side
  return losses.softmax_loss(embeddings[0], embeddings[1], scale, **kwargs) * jnp.nan


losses.register(losses.Objective("nan_test", _nan, init="clip"))

if __name__ == "__main__":
  runpy.run_module("contrastive.train", run_name="__main__", alter_sys=True)
