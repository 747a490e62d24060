"""The tutorial notebooks run top to bottom at tiny scale (``MTL_KERAS_TINY=1``).

Each notebook is executed with nbclient in a kernel of *this* interpreter: the test
writes a kernelspec pointing at ``sys.executable`` into a temporary folder, so it
works from a fresh ``pip install -e .[dev]`` whatever kernels the machine has.
The notebooks are stored without outputs; the test checks that too.
"""

import json
import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

from tests.helpers import patient  # noqa: E402

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "mtl-keras-test"
ALL = ("01_quickstart", "02_hard_tasks", "03_tuning", "04_export_and_serve")


def _kernel_manager(tmp_path) -> KernelManager:
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "mtl-keras test kernel",
                "language": "python",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


@pytest.mark.parametrize("name", ALL)
def test_notebook_has_no_outputs(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.exists():
        pytest.skip(f"{path.name} not written")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name}: outputs not stripped"


#: `make test` runs the quickstart; the other three (≈ 90 s on 2 AVX2 cores) run in `make test-slow`.
# `make test-slow`, all of them: the quickstart's was 37 s of the fresh-clone CI run on 2 AVX2 EPYC cores
# of 2026-12-07 (39 min in all, over 30)
TINY_RUNS = [pytest.param(name, marks=pytest.mark.slow) for name in ALL]


@pytest.mark.parametrize("name", TINY_RUNS)
def test_notebook_runs_at_tiny_scale(name, tmp_path, glyph_cache, monkeypatch):
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.exists():
        pytest.skip(f"{path.name} not written")
    # The kernel inherits this environment.
    monkeypatch.setenv("MTL_KERAS_TINY", "1")
    monkeypatch.setenv("MTL_KERAS_CACHE", glyph_cache)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    nb = nbformat.read(path, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=patient(240),
        startup_timeout=patient(120),
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert os.listdir(work), "the notebook wrote nothing into its working folder"
