"""The course as a website: built from the notebooks by ``ftcourse site``, and checked in a real browser.

The unit tests check the pieces (the execution cache ignores prose, pages drop widget state, the build refuses a
folder it did not make). The browser test builds the whole site in the quick profile and opens every page in
headless Chromium, from the distribution's packages (``.ci/run`` installs ``chromium`` and ``chromium-driver``); it
skips, saying why, where they are missing. Screenshots of the landing page and a lesson are written to
``build/site-screenshots`` for a person to look at, and named at the end of the test run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from ftcourse import site

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "site-screenshots"
LESSONS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))


def markdown(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def code(text, outputs=()):
    return {"cell_type": "code", "metadata": {}, "source": text, "outputs": list(outputs), "execution_count": None}


def notebook(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 4}


def printed(cell) -> str:
    return "".join(output["text"] if isinstance(output["text"], str) else "".join(output["text"])
                   for output in cell["outputs"] if output["output_type"] == "stream")


# ----------------------------------------------------------------------------------------------------------------
# The pieces.

def test_a_change_to_prose_keeps_the_execution_key_and_a_change_to_code_does_not():
    base = notebook(markdown("# 01 · A lesson\n\nSome prose."), code("x = 1"))
    prose = notebook(markdown("# 01 · A lesson\n\nOther prose."), code("x = 1"))
    other_code = notebook(markdown("# 01 · A lesson\n\nSome prose."), code("x = 2"))
    key = site.execution_key(base, "quick", "lib")
    assert site.execution_key(prose, "quick", "lib") == key
    assert site.execution_key(other_code, "quick", "lib") != key
    assert site.execution_key(base, "cpu", "lib") != key
    assert site.execution_key(base, "quick", "another library") != key


def test_cached_outputs_go_to_the_same_code_cells_of_the_new_prose(tmp_path):
    output = {"output_type": "stream", "name": "stdout", "text": "accuracy 0.93\n"}
    executed = notebook(markdown("# Old prose"), code("print(0.93)", [output]))
    executed["metadata"]["ftcourse_site"] = {"key": "k"}
    fresh = notebook(markdown("# New prose"), markdown("A new paragraph."), code("print(0.93)"))
    site._copy_outputs(executed, fresh)
    assert fresh["cells"][2]["outputs"] == [output]
    assert fresh["cells"][0]["source"] == "# New prose"


def test_a_lesson_runs_once_and_then_comes_from_the_cache(tmp_path):
    path = tmp_path / "notebooks" / "01_tiny.ipynb"
    path.parent.mkdir()
    path.write_text(json.dumps(notebook(markdown("# 01 · Tiny"), code("print(6 * 7)"))))
    first = site.execute(path, profile="quick", cache_dir=tmp_path / "cache", library="lib", timeout=120)
    assert not first.cached and not first.errors
    assert printed(first.notebook["cells"][1]) == "42\n"
    second = site.execute(path, profile="quick", cache_dir=tmp_path / "cache", library="lib", timeout=120)
    assert second.cached and printed(second.notebook["cells"][1]) == "42\n"


def test_the_kernel_runs_in_the_profile_asked_for_with_one_thread_if_asked_and_embeds_its_figures(tmp_path):
    """The tests run with MPLBACKEND=Agg (the root conftest.py); the site's kernels must still draw inline."""
    path = tmp_path / "01_figure.ipynb"
    path.write_text(json.dumps(notebook(
        markdown("# 01 · A figure"),
        code("import os, matplotlib.pyplot as plt\nprint(os.environ['FTCOURSE_PROFILE'], os.environ['OMP_NUM_THREADS'])"
             "\nplt.plot([0, 1], [1, 0]);\nplt.show()"))))
    lesson = site.execute(path, profile="cpu", cache_dir=tmp_path / "cache", library="lib", timeout=120, threads=1)
    assert not lesson.errors, lesson.errors
    assert printed(lesson.notebook["cells"][1]) == "cpu 1\n"
    assert any("image/png" in output.get("data", {}) for output in lesson.notebook["cells"][1]["outputs"])
    assert os.environ.get("MPLBACKEND") == "Agg" and os.environ.get("FTCOURSE_PROFILE") == "quick"


def test_a_cell_that_raises_is_reported_and_its_run_is_not_cached(tmp_path):
    path = tmp_path / "01_broken.ipynb"
    path.write_text(json.dumps(notebook(markdown("# 01 · Broken"), code("1 / 0"))))
    lesson = site.execute(path, profile="quick", cache_dir=tmp_path / "cache", library="lib", timeout=120)
    assert lesson.errors and "ZeroDivisionError" in lesson.errors[0] and "cell 1" in lesson.errors[0]
    assert not (tmp_path / "cache" / path.name).exists()


def test_a_page_drops_widget_state_keeps_the_static_figure_and_links_its_exercise():
    widget = {"output_type": "display_data", "metadata": {},
              "data": {site.WIDGET_VIEW: {"model_id": "abc"}, "text/plain": "VBox(children=(...))"}}
    figure = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo="}}
    lesson = notebook(markdown(f"[![Open In Colab]({site.COLAB_BADGE_URL})](https://colab/x)"),
                      markdown("# 02 · Freezing"), code("explore(table, 'shots')", [widget, figure]))
    lesson["metadata"]["widgets"] = {"state": {}}
    page = site.prepare_lesson(lesson, "02_freezing", "Assignment 02 · Freezing")
    outputs = page["cells"][2]["outputs"]
    assert outputs[0]["data"] == {"text/markdown": site.WIDGET_NOTE}
    assert outputs[1] == figure
    assert "widgets" not in page["metadata"]
    assert site.COLAB_BADGE_URL not in page["cells"][0]["source"]
    assert "[Assignment 02 · Freezing](../exercises/02_freezing.ipynb)" in page["cells"][0]["source"]
    assert site.WIDGET_VIEW in lesson["cells"][2]["outputs"][0]["data"], "the executed notebook is left as it was"


def test_printed_text_stays_beside_the_table_it_captions_and_a_quick_page_says_its_numbers_prove_nothing():
    def stream(text, name="stdout"):
        return {"output_type": "stream", "name": name, "text": text}

    table = {"output_type": "display_data", "metadata": {}, "data": {"text/html": "<table></table>"}}
    lesson = notebook(markdown("# 07"), code("...", [stream("a "), stream("caption 1\n"), table, stream("caption 2\n"),
                                                     stream("late\n", "stderr"), table]))
    page = site.prepare_lesson(lesson, None, profile="quick")
    assert site.QUICK_BANNER in page["cells"][1]["source"] and "quick" in site.QUICK_BANNER
    outputs = page["cells"][2]["outputs"]
    assert [o.get("text") for o in outputs] == ["a caption 1\n", None, "caption 2\n", "late\n", None]
    assert lesson["cells"][1]["outputs"][0]["text"] == "a ", "the executed notebook is left as it was"
    assert all(site.QUICK_BANNER not in cell["source"] for cell in site.prepare_lesson(lesson, None)["cells"])


def test_a_lesson_is_summed_up_by_its_first_objective_or_its_first_sentence():
    objectives = notebook(markdown("# 02 · Freezing\n\n**Objectives.** After this lesson you can\n"
                                   "- tell feature extraction and full\n  fine-tuning apart;\n- avoid a trap."))
    assert site.summary_of(objectives) == "You learn to tell feature extraction and full fine-tuning apart."
    welcome = notebook(markdown("# 00 · Start here\n\nWelcome to the course. It runs real experiments.\n\n"
                                "1. set up"))
    assert site.summary_of(welcome) == "Welcome to the course."


def test_the_library_page_lists_the_modules_of_the_readme_table_bottom_layer_first():
    modules = site.library_modules((ROOT / "README.md").read_text())
    assert modules[0] == "files" and modules[-1] == "cli"
    assert "site" in modules and "train" in modules
    assert {"grading.frames", "grading.grade", "grading.worker"} <= set(modules)  # subpackages, by dotted name
    assert all(not name.rpartition(".")[2].startswith("_") for name in modules)


def test_the_readme_sections_the_site_reads_exist_and_a_missing_one_says_so():
    readme = (ROOT / "README.md").read_text()
    for heading in ("Assignments and grading", "Profiles", "The library"):
        assert site.readme_section(readme, heading)
    with pytest.raises(ValueError, match="no '## Nope' section"):
        site.readme_section(readme, "Nope")


def test_the_build_refuses_to_clear_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "thesis.md").write_text("a learner's own file")
    with pytest.raises(FileExistsError, match="was not made by `ftcourse site`"):
        site._fresh_book_folder(tmp_path / "book")
    assert (tmp_path / "book" / "thesis.md").exists()


def test_an_unknown_profile_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="profile must be"):
        site.build(ROOT, tmp_path, profile="fast")


# ----------------------------------------------------------------------------------------------------------------
# The whole site, in a browser.

def chromium():
    """Headless Chromium through its WebDriver, both from the distribution; skip, saying why, without them."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("the browser test needs Debian's chromium and chromium-driver (`apt-get install chromium "
                    "chromium-driver`, as .ci/run does); they are not installed here")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, read by visit()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1400", "--allow-file-access-from-files"):
        options.add_argument(argument)
    return webdriver.Chrome(service=webdriver.ChromeService(driver), options=options)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("jupyter_book", reason="the site needs Jupyter Book (the test extra installs it)")
    # In the lessons' own folder, so that the experiment caches nbval's runs filled are reused (pyproject.toml runs
    # nbval first); two kernels at once, one thread each, as on a 2-core laptop.
    return site.build(ROOT, tmp_path_factory.mktemp("site"), profile="quick", jobs=2, timeout=900,
                      log=lambda *a, **k: None)


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def visit(browser, page: Path) -> dict:
    """Open ``page`` and wait for MathJax; what the tests need to know of it, read by the browser itself."""
    browser.get(page.as_uri())
    browser.set_script_timeout(60)
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const images = [...document.images].map(i => i.complete ? null : new Promise(r => {i.onload = i.onerror = r;}));
        const math = window.MathJax && MathJax.startup ? MathJax.startup.promise : null;
        Promise.all([...images.filter(Boolean), math].filter(Boolean)).then(() => done(true), () => done(false));
    """)
    seen = browser.execute_script("""
        const main = document.querySelector('main') || document.body;
        const kind = e => e.classList.contains('stream') ? 'stream' : e.classList.contains('text_html') ? 'html'
                                                                                                      : 'other';
        return {
          outputs: [...main.querySelectorAll('.cell_output')].map(c => [...c.children]
              .filter(e => e.classList.contains('output'))
              .map(e => [kind(e), kind(e) === 'stream' ? e.innerText.trim().split('\\n')[0] : ''])),
          images: [...main.querySelectorAll('img')].map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0})),
          links: [...document.querySelectorAll('a[href]')].map(a => a.href),
          text: main.innerText,
          errors: main.querySelectorAll('.output.traceback, .output.error, .problematic, .system-message').length,
          math: document.querySelectorAll('span.math, div.math').length,
          rendered: document.querySelectorAll('mjx-container').length,
        };
    """)
    seen["console"] = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    return seen


def printed_and_tables(cell: dict) -> list[tuple[str, str]]:
    """A page cell's outputs as the page must show them, in order: ("stream", its first line) for printed text,
    ("html", "") for a table; other outputs left out."""
    order = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":  # stderr: shown apart
            text = site._text(output).strip()
            order.append(("stream", text.split("\n")[0].strip()))
        elif "text/html" in output.get("data", {}):
            order.append(("html", ""))
    return order


@pytest.mark.slow  # executes every lesson (quick profile), builds the site, opens every page in Chromium
def test_every_lesson_runs_without_an_error_for_the_site(built):
    assert [lesson.name for lesson in built.lessons] == LESSONS
    assert not built.errors, "cells that raised while building the site:\n" + "\n".join(built.errors)


@pytest.mark.slow
def test_every_page_loads_its_images_shows_no_error_renders_its_math_and_links_only_to_pages_that_exist(
        built, browser):
    """... and logs no error in the browser's console, shows every figure its lesson drew (the diagrams of the ideas
    among them), and shows each table after the text printed before it (a caption moved away from its table
    misleads: lesson 07's "the rate each method chose" once stood above both)."""
    pages = sorted(p for p in built.html.rglob("*.html") if "_static" not in p.parts)
    assert len(pages) >= len(LESSONS) + 3, pages  # the lessons, their exercises, the home, teachers and library pages
    anchors = {}
    problems = []
    for page in pages:
        name = page.relative_to(built.html).as_posix()
        seen = visit(browser, page)
        broken = [image["src"] for image in seen["images"] if not image["ok"]]
        if broken:
            problems.append(f"{name}: images that did not load: {broken}")
        if name.startswith("lessons/") and not seen["images"]:
            problems.append(f"{name}: a lesson page without a single image")
        if "Traceback (most recent call last)" in seen["text"] or seen["errors"]:
            problems.append(f"{name}: shows a Python traceback, an error output or a docstring Sphinx could not read")
        if "Error displaying widget" in seen["text"] or "VBox(children" in seen["text"]:
            problems.append(f"{name}: shows a widget that cannot render")
        if seen["console"]:
            problems.append(f"{name}: errors in the browser's console: {seen['console']}")
        if name.startswith("lessons/"):
            prepared = json.loads((built.html.parent.parent / "book" / "lessons" / f"{page.stem}.ipynb").read_text())
            figures = [cell for cell in prepared["cells"] if any("image/png" in o.get("data", {})
                                                                 for o in cell.get("outputs", []))]
            loaded = sum(image["ok"] for image in seen["images"])
            if loaded < len(figures):
                problems.append(f"{name}: {len(figures)} cells drew a figure, but the page shows {loaded} images")
            drawers = [cell for cell in prepared["cells"] if cell["cell_type"] == "code"
                       and "diagrams." in "".join(cell["source"])]
            if any(cell not in figures for cell in drawers):
                problems.append(f"{name}: a diagram (ftcourse.diagrams) that did not become a figure on the page")
            shown = [[tuple(pair) for pair in cell] for cell in seen["outputs"]]
            for cell in prepared["cells"]:
                order = printed_and_tables(cell)
                if not ({"stream", "html"} <= {kind for kind, _ in order}):
                    continue  # a caption can be separated from its table only where both are
                lines = [line for kind, line in order if kind == "stream"]
                match = [got for got in shown if [line for kind, line in got if kind == "stream"] == lines]
                if not match:
                    problems.append(f"{name}: the printed text {lines[:2]} is not on the page as printed")
                elif [got for got in match if [p for p in got if p[0] in ("stream", "html")] == order] == []:
                    problems.append(f"{name}: printed text and tables out of order: {order} shown as {match[0]}")
        if "$$" in seen["text"] or seen["math"] > seen["rendered"]:
            problems.append(f"{name}: math left unrendered ({seen['math']} formulas, {seen['rendered']} rendered)")
        for link in seen["links"]:
            url = urlparse(link)
            if url.scheme != "file":
                continue  # the site links out to Colab and GitHub; only its own pages must resolve here
            target = Path(unquote(url.path))
            if not target.exists():
                problems.append(f"{name}: a link to {target.relative_to(built.html)}, which does not exist")
            elif url.fragment and target.suffix == ".html":
                ids = anchors.setdefault(target, set(re.findall(r'id="([^"]+)"', target.read_text())))
                if url.fragment not in ids:
                    problems.append(f"{name}: a link to #{url.fragment} of {target.name}, which has no such anchor")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_screenshots_of_the_home_page_and_a_lesson_for_a_person_to_look_at(built, browser, request):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = []
    for page, name in ((built.html / "index.html", "home.png"),
                       (built.html / "lessons" / f"{LESSONS[min(2, len(LESSONS) - 1)]}.html", "lesson.png")):
        visit(browser, page)
        assert browser.save_screenshot(str(SCREENSHOTS / name))
        shots.append(SCREENSHOTS / name)
    assert all(shot.stat().st_size > 10_000 for shot in shots), "a screenshot came out (nearly) empty"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:  # into the run's output, past pytest's capture
        reporter.write_line("\nscreenshots of the built site, for a person to look at: "
                            + ", ".join(str(shot) for shot in shots))
