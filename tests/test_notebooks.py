"""The notebooks' code cells run (executed in one namespace, as a kernel would)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
#: A line each notebook prints once its checks passed (every notebook has one).
MARKERS = {
    "quickstart.ipynb": "quickstart OK",
    "compare_with_mne.ipynb": "compare_with_mne OK",
    "batch_imaging.ipynb": "batch_imaging OK",
    "head_model_fitting.ipynb": "head_model_fitting OK",
    "resolution.ipynb": "resolution OK",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, capsys):
    nb = json.loads(path.read_text())
    ns: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), ns)
    out = capsys.readouterr().out
    assert path.name in MARKERS, f"add {path.name}'s marker line to MARKERS"
    assert MARKERS[path.name] in out, out


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
