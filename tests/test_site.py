"""The course website (`make site`): built offline from the committed lessons, then read in headless Chromium over a
local server, as a learner would: every page loads with no console error and no request leaving the server, every
image renders, a quiz answer appears on click, and each interactive figure responds to input."""

import html
import re

import nbformat
import pytest

from browser import chromium, frame_with, need_browser, serve, watched_page
from mechlib import site
from mechlib.build_notebooks import EXERCISES, NOTEBOOKS
from mechlib.lessons import lesson_notebooks


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    home = site.build(out)  # no network needed: the test runs offline like CI
    return home.parent


@pytest.fixture(scope="module")
def browser():
    need_browser()
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def base(built):
    with serve(built) as url:
        yield url


LESSONS = [p.stem for p in lesson_notebooks()]


def test_the_site_has_a_page_per_lesson_a_home_and_an_instructor_page(built):
    pages = {p.stem for p in built.glob("*.html")}
    assert {"index", "instructor", *LESSONS} <= pages
    home = (built / "index.html").read_text()
    for lesson in site.lessons():  # the syllabus: every lesson, linked, with the times its header measured
        assert f'href="{lesson.name}.html"' in home
        assert f"{lesson.cpu_s[0]} s / {lesson.cpu_s[1]} s" in home
    for name in LESSONS:  # downloads: the lesson and, where it has exercises, its exercise notebook
        assert (built / f"{name}.ipynb").exists()
        assert (built / "exercises" / f"{name}.ipynb").exists() == (EXERCISES / f"{name}.ipynb").exists()


@pytest.mark.slow
def test_every_page_loads_offline_with_no_errors_and_every_image_renders(browser, built, base):
    pages = sorted(p.name for p in built.glob("*.html"))
    w = watched_page(browser, base)
    for name in pages:
        w.page.goto(base + name, wait_until="load")
        broken = w.page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                                 ".map(i => i.src)")
        assert not broken, f"{name}: images that did not render: {broken}"
        for a in w.page.query_selector_all("a.badge[download]"):  # the download links resolve
            href = a.get_attribute("href")
            assert w.page.request.get(base + href).status == 200, f"{name}: {href} is missing"
    assert not w.errors, "console errors:\n" + "\n".join(w.errors)
    assert not w.outside, f"requests that left the local server: {w.outside}"
    assert len(pages) >= len(LESSONS) + 2


def test_each_lesson_opens_in_colab_from_the_one_repository_setting(browser, base):
    w = watched_page(browser, base)
    for name in LESSONS:
        w.page.goto(base + f"{name}.html")
        href = w.page.get_attribute("a.badge.colab", "href")
        assert href == site.colab_url(f"{name}.ipynb")
        assert re.fullmatch(rf"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/notebooks/{name}"
                            r"\.ipynb", href)


def test_a_quiz_answer_appears_on_click(browser, base):
    w = watched_page(browser, base)
    w.page.goto(base + "01_residual_stream.html")
    quiz = w.page.locator(".mechlib-quiz").first
    answer = quiz.locator("details p").first
    assert not answer.is_visible()
    quiz.locator("details summary").first.click()
    assert answer.is_visible() and answer.inner_text().strip()
    nb = nbformat.read(NOTEBOOKS / "01_residual_stream.ipynb", as_version=4)
    quiz_html = next(o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
                     if "mechlib-quiz" in o.get("data", {}).get("text/html", ""))
    first_answer = re.search(r"<details><summary>Answer</summary><p><b>(.*?)</b>", quiz_html).group(1)
    assert html.unescape(re.sub("<[^>]+>", "", first_answer)) in answer.inner_text()


def test_the_attention_browser_responds_to_its_sliders(browser, base):
    w = watched_page(browser, base)
    w.page.goto(base + "01_residual_stream.html")
    frame = frame_with(w.page, "#layer")
    assert frame.inner_text("#title") == "L0H0"
    before = frame.eval_on_selector_all("#grid td", "cells => cells.map(c => c.style.background)")
    frame.locator("#layer").press("ArrowRight")
    frame.locator("#head").press("ArrowRight")
    assert frame.inner_text("#title") == "L1H1"
    after = frame.eval_on_selector_all("#grid td", "cells => cells.map(c => c.style.background)")
    assert len(after) == len(before) > 0 and after != before
    assert not w.errors


def test_the_feature_browser_responds_to_its_slider(browser, base):
    w = watched_page(browser, base)
    w.page.goto(base + "03_sparse_autoencoders.html")
    frame = frame_with(w.page, "#latent")
    first = frame.inner_text("#out")
    assert "latent" in first and frame.query_selector_all(".ctx")
    frame.locator("#latent").press("ArrowRight")
    second = frame.inner_text("#out")
    assert second != first and re.match(r"latent \d+", second)
    assert not w.errors


def test_the_graph_viewer_responds_to_a_click(browser, base):
    w = watched_page(browser, base)
    w.page.goto(base + "08_circuit_tracing.html")
    frame = frame_with(w.page, ".agv-node")
    info = frame.locator(".agv-info")
    assert info.inner_text().startswith("Click a node")
    node = frame.locator(".agv-node").first
    label = node.locator("title").text_content().splitlines()[0]
    node.click()
    assert info.inner_text().startswith(label) and "inputs:" in info.inner_text()
    count = frame.inner_text(".agv-count")
    frame.locator(".agv-slider").press("Home")
    assert frame.inner_text(".agv-count") != count and frame.inner_text(".agv-count").startswith("1 of")
    assert not w.errors


def test_a_lesson_header_without_its_run_time_is_a_clear_error(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 09 · New lesson\n\n**Run time:** soon.")])
    nbformat.write(nb, tmp_path / "09_new.ipynb")
    with pytest.raises(ValueError, match="09_new.ipynb: its header must give the run time"):
        site.lesson_info(tmp_path / "09_new.ipynb")


def test_a_static_figure_carries_any_text_in_its_data(browser):
    """Strings that would end a <script> or put the HTML parser in another state reach the figure's script intact."""
    from mechlib.live_html import page

    text = "</script><!--<script> & ' \" \u2028 end"
    w = watched_page(browser, "about:")
    w.page.set_content(page('<div id="out"></div>', 'document.getElementById("out").textContent = DATA.text;',
                            {"text": text}))
    assert w.page.text_content("#out") == text and not w.errors
