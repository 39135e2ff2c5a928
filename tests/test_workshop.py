"""The workshop kit: after `make wheelhouse`, `make install` sets the course up from wheelhouse/ alone, with no pip
configuration that could point at another source of wheels, an unreachable index URL, and, as root, the network cut
off altogether (a network namespace with no interfaces, `unshare --net`). It needs the wheelhouse (476 MB), which CI does not download: run
`make wheelhouse` first, then this test."""

import os
import shutil
import subprocess

import pytest

from mechlib.loading import REPO_ROOT

WHEELHOUSE = REPO_ROOT / "wheelhouse"


@pytest.mark.skipif(not any(WHEELHOUSE.glob("*.whl")),
                    reason="no wheelhouse/ here: run `make wheelhouse` first (476 MB; CI does not download it)")
def test_the_course_installs_from_the_wheelhouse_with_no_network(tmp_path):
    venv = tmp_path / "venv"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1",
           "PIP_INDEX_URL": "http://127.0.0.1:9/unreachable"}  # were --no-index lost, pip would fail here
    env.pop("PIP_FIND_LINKS", None)
    cmd = ["make", "install", f"VENV={venv}"]
    if os.getuid() == 0 and shutil.which("unshare"):
        cmd = ["unshare", "--net", "--"] + cmd  # no network at all: not even the loopback is up
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"offline install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    python = str(venv / "bin" / "python")
    check = subprocess.run([python, "-c", "import nnsight, playwright, sphinx, transformer_lens; from mechlib import "
                            "load_model; print(load_model().cfg.n_layers)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0 and check.stdout.split()[-1] == "4", check.stderr[-3000:]
    assert subprocess.run([python, "-m", "pip", "check"], env=env, capture_output=True).returncode == 0
