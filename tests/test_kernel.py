"""A chapter run as a learner runs it: "Run All" in a real Jupyter kernel (ipykernel, through nbclient).

`nbdev_test` executes notebooks with execnb, in-process, and skips flagged cells itself; a learner's
JupyterLab sends every cell, flagged or not, to an IPython kernel. Chapter 00 is short and holds a
`#| cuda` cell, so it shows both: every cell runs without an error, and on a machine without a GPU
the flagged cell prints why it did not run (`skip_flagged_cells`) instead of failing.
"""
from pathlib import Path

import nbclient  # in the dev extra: this test must run, not skip
import nbformat
import torch

ROOT = Path(__file__).resolve().parents[1]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream")


def test_chapter_00_runs_top_to_bottom_in_a_jupyter_kernel(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_PROGRESS", "0")
    nb = nbformat.read(ROOT / "nbs" / "00_core.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # the saved outputs of a GPU run are not evidence of this run
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(ROOT / "nbs")}}
    )
    client.execute()  # raises CellExecutionError at the first cell that ends in an error
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o["output_type"] == "error"]
    assert not errors, errors
    assert all(c.execution_count for c in code), "a cell was not run"
    gpu_cells = [c for c in code if c.source.startswith("#| cuda")]
    assert gpu_cells, "chapter 00 no longer has a #| cuda cell to check"
    for cell in gpu_cells:
        if torch.cuda.is_available():
            assert "Not run here" not in _text(cell)
        else:
            assert _text(cell).startswith("Not run here: this cell is flagged `#| cuda`"), _text(cell)
