"""The notebooks in docs/notebooks run top to bottom (with a short training: CI's step count)."""

import os
import sys

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
manager_lib = pytest.importorskip("jupyter_client.manager")

NOTEBOOKS = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "notebooks"
)


@pytest.mark.parametrize("name", ["quickstart.ipynb", "new_loss.ipynb"])
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
  book = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  assert not any(cell.get("outputs") for cell in book.cells), f"{name} has committed outputs"
  # The kernel is a fresh process: it must not inherit the suite's 8-device XLA flag, which the
  # notebook asks for itself, nor a pretrained checkpoint of the developer's.
  monkeypatch.setenv("CONTRASTIVE_NOTEBOOK_STEPS", "6")
  monkeypatch.delenv("CONTRASTIVE_PRETRAINED", raising=False)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  manager = manager_lib.KernelManager(kernel_name="python3")
  manager.kernel_spec.argv[0] = sys.executable  # this interpreter, whatever `python` is on PATH
  client = nbclient.NotebookClient(
    book, km=manager, timeout=900, resources={"metadata": {"path": str(tmp_path)}}
  )
  client.execute()  # raises CellExecutionError, naming the cell, on any error
  outputs = [o for cell in book.cells for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
