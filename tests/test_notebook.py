"""notebooks/quickstart.ipynb runs top to bottom (every cell must succeed)."""
import os
import shutil

import nbformat
from nbclient import NotebookClient

from common import ROOT


def test_quickstart_notebook_runs():
    path = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
    shutil.rmtree(os.path.join(ROOT, "runs", "notebook_demo"), ignore_errors=True)
    nb = nbformat.read(path, as_version=4)
    # Stored executed, so that someone browsing the repository sees the results.
    assert all(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "run and save it"
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "trained to step 60" in outputs
    assert "target-encoder tensors" in outputs or "writing the encoder as safetensors" in outputs
