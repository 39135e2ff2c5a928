"""`make lab`, as a learner uses it: it starts (as root too, which containers and workshop images often are), and in
headless Chromium lesson 01 runs top to bottom in JupyterLab with no error, its widgets render, the console stays
free of errors and nothing is fetched from outside the local server."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from browser import chromium, need_browser, watched_page
from mechlib.build_notebooks import NOTEBOOKS
from mechlib.loading import REPO_ROOT

LESSON = "01_residual_stream.ipynb"

STATE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.content.model) return null;
  const cells = Array.from(w.content.model.cells), code = cells.map((c, i) => [c, i]).filter(([c]) => c.type === "code");
  return {code: code.length, done: code.filter(([c]) => c.executionCount !== null).length,
          kernel: w.sessionContext.session && w.sessionContext.session.kernel ? w.sessionContext.session.kernel.status : null,
          errors: code.flatMap(([c]) => c.outputs.toJSON().filter(o => o.output_type === "error")
                                                     .map(o => o.ename + ": " + o.evalue)),
          browser: code.filter(([c]) => c.sharedModel.getSource().includes("attention_browser(patterns"))
                       .map(([c, i]) => ({sliders: Array.from(w.content.widgets[i].node.querySelectorAll(".widget-slider"))
                                                         .filter(e => e.offsetParent !== null).length,
                                          iframes: w.content.widgets[i].node.querySelectorAll("iframe").length}))};
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"`make lab` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"JupyterLab did not answer within {seconds} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_make_lab_starts_and_runs_lesson_01_with_its_widgets(tmp_path):
    need_browser()
    # A copy of the lessons, so that JupyterLab's autosave never touches the committed notebooks.
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks", ignore=shutil.ignore_patterns("exercises", "graphs"))
    port, token, log = _free_port(), secrets.token_hex(12), tmp_path / "lab.log"
    args = (f"--no-browser --port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token} "
            "--LabApp.expose_app_in_browser=True")
    with open(log, "w") as out:
        proc = subprocess.Popen(["make", "-s", "lab", f"LAB_DIR={tmp_path / 'notebooks'}", f"LAB_ARGS={args}"],
                                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}/"
        _wait_for_server(f"{base}api/status?token={token}", proc, log)  # as root, JupyterLab alone would exit
        with chromium() as browser:
            w = watched_page(browser, base)
            w.page.goto(f"{base}lab/tree/{LESSON}?token={token}", wait_until="load")
            w.page.wait_for_function(STATE, timeout=90_000)
            w.page.wait_for_function(f"({STATE})().kernel === 'idle'", timeout=90_000)
            w.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            deadline, state = time.time() + 300, None
            while time.time() < deadline:
                state = w.page.evaluate(STATE)
                if state["errors"] or (state["done"] == state["code"] and state["kernel"] == "idle"):
                    break
                time.sleep(1)
            assert state and not state["errors"], f"lesson 01 failed in JupyterLab: {state and state['errors']}"
            assert state["done"] == state["code"] > 10, f"not every cell ran within 300 s: {state}"
            # the live attention browser: its two sliders shown, and the static copy (an iframe) taken away
            w.page.wait_for_function(f"(s => s.sliders == 2 && s.iframes == 0)(({STATE})().browser[0])", timeout=30_000)
            assert not w.errors, "console errors:\n" + "\n".join(w.errors)
            assert not w.outside, f"requests that left the local server: {w.outside}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
