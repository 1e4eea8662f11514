"""Checkpoints by hub id: a Hugging Face cache built by hand, read offline; nothing downloads."""

import os
import shutil

import pytest

from contrastive import models
from contrastive.models.pretrained import hub
from tests import pretrained_testing as pt

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _cache_repo(cache, repo: str, files_from: str) -> str:
  """Lays `files_from`'s files out as `huggingface_hub` caches `repo` at `main`."""
  base = os.path.join(cache, "models--" + repo.replace("/", "--"))
  snapshot = os.path.join(base, "snapshots", REVISION)
  os.makedirs(os.path.join(base, "refs"), exist_ok=True)
  with open(os.path.join(base, "refs", "main"), "w") as f:
    f.write(REVISION)
  shutil.copytree(files_from, snapshot)
  return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
  from huggingface_hub import constants

  cache = str(tmp_path / "hub")
  os.makedirs(cache)
  monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  return cache


def test_an_hf_hub_id_loads_from_the_cache_offline(tmp_path, offline_cache):
  _, params = pt.save_tiny(tmp_path / "tiny_hf", family="hf", seed=3)
  snapshot = _cache_repo(offline_cache, "org/tiny-clip", tmp_path / "tiny_hf")
  pre = models.load_pretrained("hf-hub:org/tiny-clip")
  assert pre.family == "hf" and os.path.samefile(pre.source, snapshot)
  pt.assert_params_bit_exact(pre.params, models.load_pretrained(tmp_path / "tiny_hf").params)


def test_an_open_clip_pair_resolves_to_its_hub_repository(tmp_path, offline_cache):
  pt.save_tiny(tmp_path / "tiny_oc", family="open_clip", seed=4)
  repo = hub.open_clip_repo("ViT-B-32", "laion2b-s34b-b79k")  # open_clip's tag matching
  assert repo == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
  _cache_repo(offline_cache, repo, tmp_path / "tiny_oc")
  pre = models.load_pretrained(("ViT-B-32", "laion2b_s34b_b79k"))
  assert pre.family == "open_clip"
  pt.assert_params_bit_exact(pre.params, models.load_pretrained(tmp_path / "tiny_oc").params)


def test_a_checkpoint_not_cached_while_offline_is_one_line(offline_cache):
  message = pt.one_line_error(
    "not in the Hugging Face cache", models.load_pretrained, "hf-hub:org/absent"
  )
  assert "HF_HUB_OFFLINE=1" in message and "huggingface-cli download org/absent" in message
  assert offline_cache in message


def test_bad_hub_names_are_one_line():
  pt.one_line_error("is not a hub id", hub.resolve, "hf-hub:no-slash")
  message = pt.one_line_error("No hub checkpoint", hub.open_clip_repo, "ViT-B-32", "x")
  assert "ViT-B-32:laion2b_s34b_b79k" in message
  assert hub.is_hub_name("hf-hub:a/b") and hub.is_hub_name(("ViT-B-32", "openai"))
  assert not hub.is_hub_name("/ckpt/dir") and not hub.is_hub_name(("a", "b", "c"))


def test_without_network_the_cache_still_serves(tmp_path, offline_cache, monkeypatch):
  from huggingface_hub import constants

  monkeypatch.delenv("HF_HUB_OFFLINE")
  monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a closed local port
  pt.save_tiny(tmp_path / "tiny_hf", family="hf", seed=5)
  snapshot = _cache_repo(offline_cache, "org/tiny-clip", tmp_path / "tiny_hf")
  assert os.path.samefile(hub.resolve("hf-hub:org/tiny-clip"), snapshot)
  message = pt.one_line_error("not in the Hugging Face cache", hub.resolve, "hf-hub:org/absent")
  assert "the hub cannot be reached" in message
