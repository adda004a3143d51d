"""notebooks/inspect_lake.ipynb runs top to bottom against a lake (every cell, no error), in a kernel of this
interpreter; the committed notebook has no outputs."""

import os

import nbformat
import pytest

from conftest import ROOT
from inspect_lake_fixture import inspect_lake  # noqa: F401 - the fixture

NOTEBOOK = ROOT / "notebooks" / "inspect_lake.ipynb"
pytestmark = pytest.mark.spark


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernelspec for this very interpreter (the venv's), found through JUPYTER_PATH: a clean clone's
    `make test` has no other kernel installed, and a user's own python3 kernel may be another Python."""
    from ipykernel.kernelspec import install

    install(kernel_name="l5s-test", prefix=str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    return "l5s-test"


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert any("knn search" in c.source for c in code)


def test_notebook_runs_against_a_lake(inspect_lake, kernel, monkeypatch):  # noqa: F811
    from nbclient import NotebookClient

    monkeypatch.setenv("L5S_LAKE", inspect_lake)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=180,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # raises on a cell's error
    out = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/html", "")) +
                    str(o.get("data", {}).get("text/plain", "")) for c in nb.cells if c.cell_type == "code"
                    for o in c.outputs)
    assert inspect_lake in out  # it opened the lake it was given
    assert out.count("<img") >= 12 + 1  # the release grid, and more
    assert "passed CLIP (dataset)" in out and "below_threshold" in out  # the funnel and its reasons
    assert "no image index" in out  # the knn cell ran, and said why it did nothing
    assert sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs) == 4  # the plots
    if os.environ.get("L5S_NOTEBOOK_SPARK", "1") != "0":
        assert "|language|count|" in out.replace(" ", "")
