r"""Teachers of teacher terms: their models, their state in the train state, their embeddings.

A ring term with a teacher (`contrastive.train.terms.Teacher`) reads the teacher's embeddings of
the batch as its side data `teacher_x`, `teacher_y` (the first and second modality), computed
in the step without gradient (`train=False`: no dropout):

- `"ema"`: the model being trained, with parameters :math:`\theta_t` that follow the online ones
  after each optimizer step, :math:`\theta_t \leftarrow m\,\theta_t + (1 - m)\,\theta`
  (`losses.ema_update`), starting as a copy. ALBEF's momentum distillation is
  `(1 - alpha) ITC + alpha distill` with such a teacher (m = 0.995, alpha = 0.4).
- `"frozen"`: a model loaded from a run directory or a checkpoint as downloaded, with its own
  architecture (its embedding width must equal the student's), never updated (open_clip's
  `--distill-model`).

The teachers' parameters are the train state's `teachers`, `{term_name: params}`, laid out like
a model's parameters on the mesh and checkpointed with the rest, so a resumed run continues the
same EMA; a frozen teacher's copy makes the resume independent of its source path. Memory: one
copy of the teacher's parameters per teacher term; its activations are inference-only. With
GradCache the teacher embeds one micro-batch at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from contrastive import losses
from contrastive import models
from contrastive.run import workdir as workdir_lib
from contrastive.train import terms as terms_lib


def teacher_terms(terms: Sequence[terms_lib.Term]) -> tuple[terms_lib.RingTerm, ...]:
  """The ring terms that have a teacher."""
  return tuple(t for t in terms if isinstance(t, terms_lib.RingTerm) and t.teacher is not None)


@functools.lru_cache(maxsize=8)
def _frozen_source(source: str, name: str | None):
  """`(model config as a dict, loader)` of a frozen teacher's checkpoint; the loader reads the
  parameters (host arrays)."""
  from contrastive.train import pretrained  # imports evaluate's readers; only when used

  if pretrained.is_run_directory(source):
    saved = workdir_lib.saved_config(source)
    if saved is None or "model" not in saved:
      raise ValueError(f"Teacher run directory {source} has no config.json with a model.")
    return saved["model"], lambda: workdir_lib.restore_params(source)[0]
  if not os.path.exists(source):
    raise FileNotFoundError(f"No teacher checkpoint at {source}.")
  pre = models.load_pretrained(source, name=name)
  return pre.model_config.to_dict(), lambda: pre.params


def teacher_models(terms: Sequence[terms_lib.Term], model: nn.Module) -> dict[str, nn.Module]:
  """`{term_name: the teacher's model}`, checked against the student `model`.

  Raises:
    ValueError: a frozen teacher whose embedding width differs from the student's, or that
      lacks one of the student's first two modalities.
  """
  out = {}
  for term in teacher_terms(terms):
    if term.teacher.kind == "ema":
      out[term.name] = model
      continue
    config, _ = _frozen_source(term.teacher.source, term.teacher.source_name)
    teacher = models.make_model(ml_collections.ConfigDict(config))
    where = f"loss.terms.{term.name}.teacher_from ({term.teacher.source})"
    if teacher.embed_dim != model.embed_dim:
      raise ValueError(
        f"{where}: the teacher's embedding width is {teacher.embed_dim}, the model's "
        f"{model.embed_dim}; a teacher's embeddings stand in the student's space."
      )
    missing = [m for m in model.modalities[:2] if m not in teacher.modalities]
    if missing:
      raise ValueError(
        f"{where}: the teacher has no {missing[0]!r} tower (its modalities: "
        f"{list(teacher.modalities)})."
      )
    out[term.name] = teacher
  return out


def init(
  terms: Sequence[terms_lib.Term], teachers: Mapping[str, nn.Module], params: Any, rng: jax.Array
) -> dict[str, Any] | None:
  """The initial `TrainState.teachers`: an EMA teacher is a copy of `params`; a frozen one is
  its model's random initialization until `load_frozen` fills it. None without teacher terms."""
  chosen = teacher_terms(terms)
  if not chosen:
    return None
  out = {}
  for term in chosen:
    if term.teacher.kind == "ema":
      out[term.name] = jax.tree.map(jnp.copy, params)
    else:
      teacher = teachers[term.name]
      out[term.name] = nn.unbox(teacher.init(rng, teacher.dummy_batch(1), train=False))["params"]
  return out


def load_frozen(
  terms: Sequence[terms_lib.Term], state_teachers: Mapping[str, Any], shardings: Any
) -> dict[str, Any] | None:
  """`state_teachers` with every frozen teacher's parameters read from its checkpoint and laid
  out in `shardings` (`TrainState.teachers`' shardings).

  Raises:
    ValueError: the checkpoint's parameters do not fit the teacher's model (shapes).
  """
  if state_teachers is None:
    return None
  out = dict(state_teachers)
  for term in teacher_terms(terms):
    if term.teacher.kind != "frozen":
      continue
    _, load = _frozen_source(term.teacher.source, term.teacher.source_name)
    loaded = load()
    want = jax.tree.map(np.shape, out[term.name])
    got = jax.tree.map(np.shape, loaded)
    if want != got:
      raise ValueError(
        f"loss.terms.{term.name}.teacher_from ({term.teacher.source}): its parameters do not "
        "fit the model its config describes."
      )
    out[term.name] = jax.device_put(jax.tree.map(np.asarray, loaded), shardings[term.name])
  return out


def restart_ema(
  terms: Sequence[terms_lib.Term], state_teachers: Mapping[str, Any] | None, params: Any
) -> dict[str, Any] | None:
  """`state_teachers` with every EMA teacher a copy of `params` (after `checkpoint.init_from`
  replaced the model's initialization, the EMA starts from the loaded parameters)."""
  if state_teachers is None:
    return None
  out = dict(state_teachers)
  for term in teacher_terms(terms):
    if term.teacher.kind == "ema":
      out[term.name] = jax.tree.map(jnp.copy, params)
  return out


def update(
  terms: Sequence[terms_lib.Term], state_teachers: Mapping[str, Any] | None, params: Any
) -> dict[str, Any] | None:
  """The teachers after an optimizer step: each EMA teacher moves towards the new `params`."""
  if state_teachers is None:
    return None
  out = dict(state_teachers)
  for term in teacher_terms(terms):
    if term.teacher.kind == "ema":
      out[term.name] = losses.ema_update(params, out[term.name], term.teacher.momentum)
  return out


def side(
  terms: Sequence[terms_lib.Term],
  teachers: Mapping[str, nn.Module],
  state_teachers: Mapping[str, Any] | None,
  inputs: Mapping[str, jax.Array],
  modalities: Sequence[str],
) -> dict[str, dict[str, jax.Array]]:
  """`{term_name: {"teacher_x": [b, d], "teacher_y": [b, d]}}`: each teacher's embeddings of
  the first and second modality of `inputs`, without gradient."""
  out = {}
  for term in teacher_terms(terms):
    teacher = teachers[term.name]
    wanted = {m: inputs[m] for m in modalities[:2]}
    emb, _ = teacher.apply({"params": state_teachers[term.name]}, wanted, train=False)
    emb = jax.lax.stop_gradient(emb)
    out[term.name] = dict(zip(terms_lib.TEACHER_SIDE, (emb[m] for m in modalities[:2])))
  return out
