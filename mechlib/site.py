"""The course website: a static site built offline from the committed, executed lessons (no re-execution).

    python -m mechlib.site                 # build/site/index.html (`make site`)
    python -m mechlib.site --out DIR

Sphinx with myst-nb renders the notebooks: both are Python packages that build with no network, where Jupyter Book 2
(mystmd) downloads its site theme and queries api.mystmd.org at build time (mystmd issue #1451). The pages load
nothing from a CDN: each lesson's interactive figures are the static HTML/JS versions `mechlib.live_html` saves in
the notebook, and widget views (which need CDN JavaScript) are dropped when the notebooks are staged.

The sources: website/ holds conf.py, the home and instructor pages' prose (Markdown with {{placeholders}}) and a
style sheet; this module stages them with copies of the lessons (a badge row added on top), fills the placeholders
(syllabus, schedule) from the lessons' own headers and exercises, and runs Sphinx.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from mechlib.build_notebooks import EXERCISES, REPO_URL
from mechlib.lessons import lesson_notebooks
from mechlib.live_html import drop_widgets
from mechlib.loading import REPO_ROOT

WEBSITE = REPO_ROOT / "website"
_RUN_TIME = re.compile(r"about (\d+) s on a 2-core CPU with the course model, (\d+) s with course-bpe")
_EXERCISE = re.compile(r"^#+ Exercise (\d+) ([★☆]+): (.+)$", re.M)


@dataclass
class Lesson:
    name: str  # the notebook's file name without .ipynb, e.g. "01_residual_stream"
    title: str  # from its first heading
    cpu_s: tuple[int, int]  # measured run time on a 2-core CPU: course model, course-bpe
    exercises: list[tuple[int, str]]  # (difficulty 1-3, title)

    @property
    def number(self) -> str:
        return self.name[:2]


def colab_url(notebook: str) -> str:
    """Open a notebook of the repository (REPO_URL, the one setting) in Colab."""
    return REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/") + \
        f"/blob/main/notebooks/{notebook}"


def lesson_info(path: Path) -> Lesson:
    """A lesson's title, measured run times and exercises, read from the notebook itself."""
    nb = nbformat.read(path, as_version=4)
    header = nb.cells[0].source
    title = header.splitlines()[0].lstrip("# ").strip()
    times = _RUN_TIME.search(header)
    if times is None:
        raise ValueError(f"{path.name}: its header must give the run time as 'about N s on a 2-core CPU with the "
                         f"course model, M s with course-bpe' (the syllabus and the schedule read it)")
    exercises = [(m.group(2).count("★"), m.group(3)) for c in nb.cells if c.cell_type == "markdown"
                 for m in _EXERCISE.finditer(c.source)]
    return Lesson(path.stem, title, (int(times.group(1)), int(times.group(2))), exercises)


def lessons() -> list[Lesson]:
    return [lesson_info(p) for p in lesson_notebooks()]


def _stars(d: int) -> str:
    return "★" * d + "☆" * (3 - d)


def syllabus_table(all_lessons: list[Lesson]) -> str:
    rows = ["| lesson | run time on a 2-core CPU: course model / course-bpe | exercises |", "|---|---|---|"]
    for ls in all_lessons:
        ex = ", ".join(_stars(d) for d, _ in ls.exercises) or "none"
        rows.append(f"| [{ls.title}]({ls.name}.ipynb) | {ls.cpu_s[0]} s / {ls.cpu_s[1]} s | {ex} |")
    return "\n".join(rows)


def live_exercise(ls: Lesson) -> tuple[int, str] | None:
    """The exercise to do live: the first of the lowest difficulty (short enough to type in front of a room)."""
    return min(ls.exercises, key=lambda e: e[0]) if ls.exercises else None


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def schedule_table(all_lessons: list[Lesson], start: int = 9 * 60 + 30, first_day_ends_after: str = "04") -> str:
    """A two-day plan (day 2 starts with the lesson after `first_day_ends_after`): per lesson 15 min of introduction
    plus 15 min per exercise (a suggestion, not a measurement), a 60-min lunch at the first gap after 12:00 and a
    15-min break after every two lessons otherwise; the run times are measured."""
    rows = ["| day | start | lesson | slot | run time (course model, 2-core CPU) | do live | learners try, finish at home |",
            "|---|---|---|---|---|---|---|"]
    day, t, lunch, since_break = 1, start, False, 0
    for i, ls in enumerate(all_lessons):
        slot = 15 + 15 * len(ls.exercises)
        live = live_exercise(ls)
        rest = [e for e in ls.exercises if e != live]
        rows.append(f"| {day} | {_clock(t)} | [{ls.title}]({ls.name}.ipynb) | {slot} min | {ls.cpu_s[0]} s | "
                    + (f"{_stars(live[0])} {live[1]}" if live else "run it together") + " | "
                    + ("; ".join(f"{_stars(d)} {name}" for d, name in rest) or "none") + " |")
        t, since_break = t + slot, since_break + 1
        last_of_day = ls.number == first_day_ends_after or i + 1 == len(all_lessons)
        if last_of_day:
            rows.append(f"| {day} | {_clock(t)} | end of day {day} | | | | |")
            day, t, lunch, since_break = day + 1, start, False, 0
        elif not lunch and t >= 12 * 60:
            rows.append(f"| {day} | {_clock(t)} | lunch | 60 min | | | |")
            t, lunch, since_break = t + 60, True, 0
        elif since_break >= 2:
            rows.append(f"| {day} | {_clock(t)} | break | 15 min | | | |")
            t, since_break = t + 15, 0
    return "\n".join(rows)


def stage_lesson(path: Path, dest: Path) -> None:
    """A copy of the lesson for the site: a badge row after its header cell (Colab, the downloads), and no widget
    views or widget state (they would load CDN JavaScript; each figure's static version is the output before)."""
    nb = nbformat.read(path, as_version=4)
    drop_widgets(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":  # a link to a notebook that is not a page: a download
            cell.source = re.sub(r"\]\((exercises/[^)]+\.ipynb)\)", r"](path:\1)", cell.source)
    links = [f'<a class="badge colab" href="{colab_url(path.name)}">Open in Colab</a>',
             f'<a class="badge" href="{path.name}" download>Download this lesson</a>']
    if (EXERCISES / path.name).exists():
        links.append(f'<a class="badge" href="exercises/{path.name}" download>Download the exercise notebook</a>')
    badges = nbformat.v4.new_markdown_cell('<div class="badges">' + " ".join(links) + "</div>")
    badges.id = "site-badges"
    nb.cells.insert(1, badges)
    nbformat.write(nb, dest / path.name)


def fill(template: Path, values: dict[str, str]) -> str:
    text = template.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = re.findall(r"\{\{(\w+)\}\}", text)
    if left:
        raise ValueError(f"{template.name}: no value for {left}")
    return text


def stage(src: Path) -> list[Lesson]:
    """Write the Sphinx source tree: pages, lessons, downloadable notebooks."""
    if src.exists():
        shutil.rmtree(src)
    (src / "exercises").mkdir(parents=True)
    all_lessons = lessons()
    for p in lesson_notebooks():
        stage_lesson(p, src)
    for p in sorted(EXERCISES.glob("*.ipynb")):
        shutil.copy(p, src / "exercises" / p.name)
    total = sum(ls.cpu_s[0] for ls in all_lessons)
    values = {"syllabus": syllabus_table(all_lessons), "schedule": schedule_table(all_lessons),
              "total_cpu": f"{total / 60:.0f}", "colab_first": colab_url(all_lessons[0].name + ".ipynb"),
              "repo_url": REPO_URL, "toctree": "\n".join(ls.name for ls in all_lessons)}
    for page in ("index.md", "instructor.md"):
        (src / page).write_text(fill(WEBSITE / page, values), encoding="utf-8")
    shutil.copytree(WEBSITE / "_static", src / "_static")
    return all_lessons


def build(out: Path = REPO_ROOT / "build" / "site", quiet: bool = True) -> Path:
    """Stage the sources next to `out` and build the HTML site into it; return the home page's path."""
    from sphinx.cmd.build import build_main

    src = out.parent / (out.name + "-src")
    stage(src)
    args = ["-b", "html", "-c", str(WEBSITE), "-W", "--keep-going", "-E", str(src), str(out)]
    if build_main((["-q"] if quiet else []) + args) != 0:
        raise RuntimeError(f"Sphinx failed to build the site from {src} (its warnings are above)")
    # The badges' downloads: each lesson and exercise notebook next to the pages, at the paths the badges link to.
    for p in lesson_notebooks():
        shutil.copy(p, out / p.name)
    shutil.copytree(src / "exercises", out / "exercises", dirs_exist_ok=True)
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mechlib.site", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "site", help="where the site goes")
    args = p.parse_args(argv)
    home = build(args.out.resolve(), quiet=False)
    print(f"site: {home} (serve it with `python -m http.server -d {home.parent}`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
