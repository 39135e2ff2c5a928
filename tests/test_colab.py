"""Colab's first run, simulated: a lesson opened from GitHub in a fresh runtime must run top to bottom with no restart.

The simulation (see ../shared/API_NOTES.md, "Colab"):
- a fresh venv on this machine's default Python (the local torch wheel is for it; a Python 3.12 venv would download
  CUDA torch) holding only what Colab ships that matters here, at older versions: torch, ipykernel, nbclient,
  transformers 4.x, an older numpy;
- `google.colab` importable and imported in the kernel before any cell runs, as on Colab;
- `pip` and `python` of that venv first on the kernel's PATH;
- the repository URL in the setup cell answered by a local copy of this working tree (git's url.insteadOf), so
  nothing is downloaded but packages (pip's cache serves those it has).

It runs lesson 00 as committed (its generated setup cell, then every other cell) in one kernel, then the setup cell a
second time, and checks what a learner would see: no error, mechlib imported from the clone, the tested versions
installed, Colab's numpy kept. About 2 minutes with a warm pip cache (110 s here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mechlib.build_notebooks import COLAB_KEEPS, REPO_URL
from mechlib.loading import REPO_ROOT

# What a Colab runtime has before the course installs anything: older than the course's pins on purpose.
COLAB_PREINSTALLED = ["torch==2.13.0", "transformers==4.57.3", "numpy==2.0.2", "ipykernel", "nbclient", "nbformat"]
COLAB_NUMPY = "2.0.2"


def _run(cmd: list[str], **kw) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def _snapshot_remote(tmp: Path) -> Path:
    """A bare repository whose main branch is this working tree as it is now (tracked and untracked, not ignored),
    committed without touching the real index or history: what a learner's clone would get."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    index = tmp / "index"
    shutil.copy(REPO_ROOT / ".git" / "index", index)  # its stat cache makes `add -A` fast
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    git = ["git", "-C", str(REPO_ROOT)]
    _run(git + ["add", "-A"], env=env)
    tree = _run(git + ["write-tree"], env=env).strip()
    commit = _run(git + ["-c", "user.name=sim", "-c", "user.email=sim@localhost", "commit-tree", tree, "-m",
                         "Colab simulation snapshot"]).strip()
    remote = tmp / "remote.git"
    _run(["git", "init", "-q", "--bare", "-b", "main", str(remote)])
    _run(git + ["push", "-q", str(remote), f"{commit}:refs/heads/main"])
    return remote


def _colab_venv(tmp: Path) -> Path:
    venv = tmp / "colab-venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    try:
        _run([str(py), "-m", "pip", "install", "-q", *COLAB_PREINSTALLED])
    except RuntimeError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"could not install Colab's preinstalled packages (no package index? CI runs this): {e}"[:600])
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (purelib / "google" / "colab").mkdir(parents=True)  # a namespace package `google`, as protobuf's
    (purelib / "google" / "colab" / "__init__.py").write_text('"""A stand-in for Colab\'s module (tests/test_colab.py)."""\n')
    return venv


def _kernel_manager(tmp: Path, venv: Path, env: dict):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp / "kernels" / "colab-sim"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab simulation", "language": "python", "env": env}))
    return KernelManager(kernel_name="colab-sim", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp / "kernels")]))


def _text(cell) -> str:
    return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", "")) for o in cell.outputs)


@pytest.mark.slow
def test_lesson_00_runs_on_colabs_first_run_and_its_setup_cell_runs_twice(tmp_path):
    from nbclient import NotebookClient

    remote = _snapshot_remote(tmp_path)
    venv = _colab_venv(tmp_path)
    content, course = tmp_path / "content", tmp_path / "content" / "course"
    content.mkdir()
    keep = {k: v for k, v in os.environ.items()
            if k in ("HOME", "LANG", "TMPDIR") or k.startswith(("PIP_", "OPENBLAS_", "OMP_"))}
    env = {**keep, "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
           "MECHLIB_COURSE_DIR": str(course), "MECHLIB_CACHE": str(tmp_path / "cache"),
           "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.file://{remote}.insteadOf", "GIT_CONFIG_VALUE_0": REPO_URL}

    nb = nbformat.read(REPO_ROOT / "notebooks" / "00_welcome.ipynb", as_version=4)
    setup = next(i for i, c in enumerate(nb.cells) if "setup" in c.metadata.get("tags", []))
    nb.cells.insert(0, nbformat.v4.new_code_cell("import google.colab  # imported before any cell, as on Colab"))
    setup += 1
    probe = nbformat.v4.new_code_cell("import importlib.metadata, mechlib\n"
                                      "print(mechlib.__file__, *map(importlib.metadata.version, ['numpy', 'transformers', "
                                      "'transformer-lens', 'nnsight']), os.getcwd(), sep='\\n')")
    again = nbformat.v4.new_code_cell(nb.cells[setup].source)  # a learner runs the setup cell a second time
    nb.cells += [probe, again, nbformat.v4.new_code_cell(probe.source)]
    client = NotebookClient(nb, km=_kernel_manager(tmp_path, venv, env), timeout=900,
                            resources={"metadata": {"path": str(content)}})
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)  # raises CellExecutionError, with the traceback, on the first error

    pins = dict(line.strip().split("==") for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    mechlib_file, numpy_v, transformers_v, tl_v, nnsight_v, cwd = _text(probe).split()
    assert Path(mechlib_file).is_relative_to(course), "mechlib must be imported from the clone, with its data/"
    assert Path(cwd) == course / "notebooks"
    assert (transformers_v, tl_v, nnsight_v) == (pins["transformers"], pins["transformer-lens"], pins["nnsight"])
    assert numpy_v == COLAB_NUMPY, "Colab's numpy is kept (COLAB_KEEPS)"
    assert "numpy" in COLAB_KEEPS and "torch" in COLAB_KEEPS
    assert "already exists" not in _text(again)
    assert _text(nb.cells[-1]) == _text(probe), "the second run of the setup cell changes nothing"
