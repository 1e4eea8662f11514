"""Plots are drawn headless, without pyplot, and the PCA shows the gap."""

import os
import subprocess
import sys

import numpy as np

from contrastive.evaluate import plots


def test_pca_projection_separates_a_shift():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 10)) * 0.1
  y = x + np.r_[5.0, np.zeros(9)]
  px, py, var = plots.pca_projection(x, y)
  assert px.shape == (200, 2) and py.shape == (200, 2)
  assert abs(py[:, 0].mean() - px[:, 0].mean()) > 4.9  # PC1 is the shift
  assert var[0] > 0.9


def test_plots_write_pngs_without_pyplot(tmp_path):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
  plots.plot_pca(tmp_path / "a.png", x, y)
  plots.plot_similarity_histogram(
    tmp_path / "b.png", rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 500)
  )
  plots.plot_spectrum(tmp_path / "c.png", {"image": np.array([3.0, 1.0, 0.1])})
  plots.plot_curves(tmp_path / "d.png", [{"step": 1, "a": 0.1}, {"step": 2, "a": 0.3}])
  for name in "abcd":
    assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_importing_the_package_does_not_import_matplotlib():
  code = "import sys, contrastive.evaluate; assert 'matplotlib' not in sys.modules"
  subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "DISPLAY": ""})
