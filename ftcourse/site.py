"""The course as a website: every lesson executed, with its figures, tables and printed results, as static pages.

``ftcourse site`` (or :func:`build`) turns ``notebooks/`` into a Jupyter Book in four steps:

1. **Execute** each lesson in a Jupyter kernel, in the profile asked for, with matplotlib's inline backend so that
   every figure is embedded in the outputs. The kernel runs in ``notebooks/``, as it does when a learner opens the
   lesson in JupyterLab, so the lessons reuse the sweep caches a learner's runs filled (and fill them).
2. **Cache** each executed notebook under ``OUT/executed``, keyed by what decides its outputs: its code cells, the
   profile and the ``ftcourse`` source. A change to prose alone reuses the outputs, so it rebuilds in seconds.
3. **Prepare** the pages: the Colab badge from a local image (the site works offline), a link to the lesson's
   exercise, the "Try it" widgets dropped (their state lives in a kernel; each explorer leaves a static figure
   below itself for pages like these), printed text kept in its place between the tables it captions
   (:func:`merge_adjacent_streams`), a banner on every lesson of a ``quick`` build (its numbers are a smoke test),
   a landing page, a teachers' page and a page for the library built from its docstrings.
4. **Build** the HTML with Jupyter Book 1 (Sphinx and MyST-NB: pure Python, so ``pip`` installs all of it) and
   MathJax served from the site itself (``sphinx-mathjax-offline``).

The notebooks in the repository stay stripped of outputs; only the copies in ``OUT`` carry them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .exercises import REPOSITORY
from .files import atomic_write

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
COLAB_BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"
MARKER = ".ftcourse-site"  # in OUT/book: this folder is the site's own, rebuilt from scratch each time
QUICK_BANNER = ("```{warning}\nThis page was built in the **quick** profile: a smoke test that only checks that "
                "every cell runs. Its numbers come from a handful of steps and one seed, so they can contradict "
                "the text, and the lesson's claims are not checked. Build with `ftcourse site --profile cpu` for "
                "the numbers a learner sees.\n```")
WIDGET_NOTE = ("*In Jupyter a slider stands here, to pick one setting at a time; the figure below shows every "
               "setting.*")
# The badge, drawn for the site so that its pages load nothing from the network.
COLAB_BADGE_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img"
 aria-label="Open in Colab"><title>Open in Colab</title>
<rect width="117" height="20" rx="3" fill="#555"/><rect x="0" width="20" height="20" rx="3" fill="#f9ab00"/>
<circle cx="7.5" cy="10" r="4" fill="none" stroke="#fff" stroke-width="2"/>
<circle cx="12.5" cy="10" r="4" fill="none" stroke="#e8710a" stroke-width="2"/>
<text x="68" y="14" fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"
 text-anchor="middle">Open in Colab</text></svg>
"""


@dataclass
class Lesson:
    """One executed lesson: where it came from, how long it took (0 when its outputs came from the cache)."""

    path: Path
    notebook: dict
    seconds: float = 0.0
    cached: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem


# ----------------------------------------------------------------------------------------------------------------
# 1-2. Execute, with a cache of executed notebooks.

LESSON_FILES = "[0-9][0-9]*_*.ipynb"  # 00_start_here.ipynb ... 04b_scarce_validation_and_remedies.ipynb ...


def lesson_number(stem: str) -> str:
    """``"04"`` for ``04_negative_transfer``, ``"04b"`` for its continuation: what pairs a lesson with its exercise."""
    return stem.split("_", 1)[0]


def library_digest(package: Path | None = None) -> str:
    """sha256 over the ``ftcourse`` source and checkpoint recipes: a change there may change any lesson's output.

    This module is left out: how the site is built changes no lesson's outputs.
    """
    package = package or Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".json") and "__pycache__" not in path.parts and path.name != "site.py":
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def execution_key(notebook: dict, profile: str, library: str) -> str:
    """What decides a notebook's outputs: its code cells, the profile and the library; not its prose."""
    code = [_source(cell) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    return hashlib.sha256(json.dumps([code, profile, library]).encode()).hexdigest()


def execute(path: Path, *, profile: str, cache_dir: Path, library: str, timeout: int = 1800,
            threads: int | None = None) -> Lesson:
    """The lesson at ``path`` with its outputs: from ``cache_dir`` when its key matches, else run in a kernel.

    ``threads`` caps the kernel's torch threads (``OMP_NUM_THREADS``); ``None`` leaves torch's default.
    """
    notebook = json.loads(path.read_text())
    key = execution_key(notebook, profile, library)
    cached_path = cache_dir / path.name
    if cached_path.exists():
        try:
            cached = json.loads(cached_path.read_text())
        except ValueError:
            cached = {}  # a damaged cache entry is only a cache miss
        if cached.get("metadata", {}).get("ftcourse_site", {}).get("key") == key:
            _copy_outputs(cached, notebook)
            return Lesson(path, notebook, cached=True)
    start = time.perf_counter()
    errors = _run_in_kernel(path, notebook, profile=profile, timeout=timeout, threads=threads)
    lesson = Lesson(path, notebook, seconds=time.perf_counter() - start, errors=errors)
    if not errors:  # a failed run is shown, never reused
        notebook.setdefault("metadata", {})["ftcourse_site"] = {"key": key, "profile": profile,
                                                                "seconds": round(lesson.seconds, 1)}
        atomic_write(cached_path, lambda f: f.write(json.dumps(notebook).encode()))
    return lesson


def _run_in_kernel(path: Path, notebook: dict, *, profile: str, timeout: int, threads: int | None) -> list[str]:
    """Run every cell in a fresh kernel started in the notebook's folder; the cells that raised, as messages.

    The kernel gets this process's environment with the profile set, claims strict (a claim the run does not bear
    out is an error, and a page with an error is never cached: :mod:`ftcourse.claims`) and ``MPLBACKEND``
    removed, so that matplotlib's inline backend embeds every figure in the outputs (this process's own
    environment is left as it is: lessons may run side by side in threads).
    """
    import nbclient
    import nbformat

    env = {**os.environ, "FTCOURSE_PROFILE": profile, "FTCOURSE_CLAIMS": "strict", "FTCOURSE_PROGRESS": "0"}
    env.pop("MPLBACKEND", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    node = nbformat.reads(json.dumps(notebook), as_version=4)  # sources as strings, as nbclient wants them
    client = nbclient.NotebookClient(node, timeout=timeout, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)
    notebook.clear()
    notebook.update(json.loads(nbformat.writes(node)))
    errors = []
    for number, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(f"{path.name}, cell {number}: {output.get('ename')}: {output.get('evalue')}")
    return errors


def _copy_outputs(executed: dict, notebook: dict) -> None:
    """Give ``notebook``'s code cells the outputs of the same cells in ``executed`` (its prose may differ)."""
    done = [c for c in executed["cells"] if c["cell_type"] == "code"]
    todo = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    for source, target in zip(done, todo):
        target["outputs"] = source.get("outputs", [])
        target["execution_count"] = source.get("execution_count")
    notebook.setdefault("metadata", {})["ftcourse_site"] = executed["metadata"]["ftcourse_site"]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


# ----------------------------------------------------------------------------------------------------------------
# 3. Prepare the pages.

def merge_adjacent_streams(outputs: list[dict]) -> list[dict]:
    """``outputs`` with each run of adjacent printed text (stream outputs of one name) joined into one, and
    everything else where it was. MyST-NB's own ``nb_merge_streams`` joins *all* of a cell's stdout into its
    first stream, which moves a caption printed between two tables above both; this keeps it beside its table."""
    merged: list[dict] = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and previous is not None
                and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
            previous["text"] = _text(previous) + _text(output)
        else:
            merged.append(dict(output))
    return merged


def _text(output: dict) -> str:
    text = output.get("text", "")
    return "".join(text) if isinstance(text, list) else str(text)


def prepare_lesson(notebook: dict, exercise: str | None, exercise_title: str = "", profile: str = "cpu") -> dict:
    """The page version of an executed lesson: local badge, a link to its exercise, widgets replaced by a note,
    printed text beside the tables it captions, the Colab install cell folded away, and in the ``quick`` profile a
    banner saying that the numbers are a smoke test."""
    notebook = json.loads(json.dumps(notebook))
    notebook.get("metadata", {}).pop("widgets", None)
    for cell in notebook["cells"]:
        if "outputs" in cell:
            cell["outputs"] = merge_adjacent_streams(cell["outputs"])
        if cell["cell_type"] == "markdown":
            cell["source"] = _source(cell).replace(COLAB_BADGE_URL, "colab-badge.svg")
        elif '"google.colab" in sys.modules' in _source(cell):  # Colab's install cell: folded on the page
            cell["metadata"].setdefault("tags", []).append("hide-cell")
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                output["data"] = {"text/markdown": WIDGET_NOTE}
    first = notebook["cells"][0]
    if exercise and first["cell_type"] == "markdown" and "colab-badge.svg" in _source(first):
        first["source"] = _source(first) + f" · **Exercise:** [{exercise_title}](../exercises/{exercise}.ipynb)"
    if profile == "quick":
        notebook["cells"].insert(1, {"cell_type": "markdown", "metadata": {}, "source": QUICK_BANNER})
    return notebook


def prepare_exercise(notebook: dict) -> dict:
    """An exercise page: the notebook as it is handed out (not run), with the local badge."""
    notebook = json.loads(json.dumps(notebook))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = _source(cell).replace(COLAB_BADGE_URL, "colab-badge.svg")
    notebook.setdefault("metadata", {})["mystnb"] = {"execution_mode": "off"}
    return notebook


def title_of(notebook: dict) -> str:
    """The text of the notebook's first ``#`` heading."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            match = re.search(r"^#\s+(.+)$", _source(cell), re.M)
            if match:
                return match.group(1).strip()
    return "untitled"


def summary_of(notebook: dict) -> str:
    """One line about a lesson: its first objective ("After this lesson you can ..."), else its first sentence."""
    for cell in notebook["cells"]:
        text = _source(cell) if cell["cell_type"] == "markdown" else ""
        if not re.search(r"^#\s", text, re.M):
            continue
        body = re.split(r"^#\s.*$", text, maxsplit=1, flags=re.M)[1].strip()
        bullet = re.search(r"you can\s*\n-\s+(.+?)(?:\n-|\n\n|$)", body, re.S)
        if bullet:
            return "You learn to " + " ".join(bullet.group(1).split()).rstrip(";.") + "."
        paragraph = " ".join(body.split("\n\n", 1)[0].split())
        return re.split(r"(?<=[.?!])\s", paragraph, maxsplit=1)[0]
    return ""


def first_figure(notebook: dict) -> bytes | None:
    """The PNG bytes of the first figure among a notebook's outputs."""
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                return base64.b64decode("".join(png) if isinstance(png, list) else png)
    return None


def readme_section(readme: str, heading: str) -> str:
    """The text of the README's ``## heading`` section, up to its next second-level heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    if not match:
        raise ValueError(f"README.md has no '## {heading}' section; the site takes that page's text from it.")
    return match.group(1).strip()


def library_modules(readme: str) -> list[str]:
    """The public modules in the order of the README's layer table (bottom layer first), those of subpackages by
    their dotted names (``grading.frames``)."""
    section = readme_section(readme, "The library")
    names = []
    for row in re.findall(r"^\|\s*[\d–-]+\s*\|(.+?)\|", section, re.M):
        names += [name for name in re.findall(r"`([\w.]+)`", row) if not name.rpartition(".")[2].startswith("_")]
    return names


def landing_page(lessons: list[Lesson], readme: str, exercises: dict[str, tuple[str, str]]) -> str:
    """The home page: the README's opening, how to run the course, and each lesson with a line and a figure.

    ``exercises`` maps a lesson's name to its exercise notebook's name and title.
    """
    intro = readme.split("\n## ", 1)[0].split("\n", 1)[1].strip()  # the README's opening, below its title
    lines = ["# ftcourse: fine-tuning and transferability, hands on", "", intro, "",
             "## How to run it", "",
             "- **On your machine** (Python 3.10 or newer): `pip install -e .` in a clone of the repository, "
             "then `jupyter lab notebooks/`. A laptop CPU is enough: every lesson sizes itself to the machine "
             "(its *profile*).",
             f"- **In Colab**: each lesson starts with an ![Open in Colab](colab-badge.svg) badge; its first cell "
             "installs the course there. Choose *Runtime → Change runtime type → GPU*.",
             f"- **The source**: [github.com/{REPOSITORY}](https://github.com/{REPOSITORY}).", "",
             "These pages show each lesson as it ran when the site was built, with its figures and results; "
             "run it yourself to change the knobs.", "",
             "## The lessons", ""]
    for lesson in lessons:
        title = title_of(lesson.notebook)
        lines += [f"### [{title}](lessons/{lesson.name}.ipynb)", "", summary_of(lesson.notebook), ""]
        if first_figure(lesson.notebook):
            lines += [f"![A figure from lesson {title}](figures/{lesson.name}.png)", ""]
        if lesson.name in exercises:
            stem, exercise_title = exercises[lesson.name]
            lines += [f"Exercise: [{exercise_title}](exercises/{stem}.ipynb)", ""]
    lines += ["## For teachers", "",
              "Assignments with checks, an autograder and what its sandbox guarantees: [For teachers](teachers.md).",
              "", "## The library", "",
              "The mechanisms the lessons use, from their docstrings: [The ftcourse library](library.md).", ""]
    return "\n".join(lines)


def teachers_page(readme: str, exercises: list[str]) -> str:
    lines = ["# For teachers", "", readme_section(readme, "Assignments and grading"), "",
             "## The assignments", ""]
    lines += [f"- [{name}](exercises/{name}.ipynb)" for name in exercises]
    lines += ["", "## Profiles", "", readme_section(readme, "Profiles"), ""]
    return "\n".join(lines)


def library_page(readme: str) -> str:
    lines = ["# The ftcourse library", "",
             "Every lesson leans on these modules; each holds one idea, and its docstring teaches it. They are "
             "listed bottom layer first: a module uses only those above it in this list.", "",
             readme_section(readme, "The library").split("\n\n", 1)[-1], ""]
    for name in library_modules(readme):
        lines += [f"## `ftcourse.{name}`", "", "```{eval-rst}", f".. automodule:: ftcourse.{name}",
                  "   :members:", "```", ""]
    return "\n".join(lines)


def book_config(title: str) -> str:
    return f"""title: {json.dumps(title)}
author: the ftcourse authors
only_build_toc_files: true
execute:
  execute_notebooks: "off"
parse:
  myst_enable_extensions: [dollarmath, amsmath, colon_fence]
html:
  use_repository_button: false
  home_page_in_navbar: true
sphinx:
  extra_extensions: [sphinx.ext.autodoc, sphinx.ext.napoleon, sphinx-mathjax-offline, ftcourse.site]
  recursive_update: true
  config:
    html_show_copyright: false
    html_context:
      default_mode: light
    autodoc_member_order: bysource
    nb_merge_streams: false
    suppress_warnings: [myst.header, mystnb.unknown_mime_type]
"""


def table_of_contents(lessons: list[Lesson], exercises: list[str]) -> str:
    lines = ["format: jb-book", "root: index", "parts:", "  - caption: Lessons", "    chapters:"]
    lines += [f"      - file: lessons/{lesson.name}" for lesson in lessons]
    lines += ["  - caption: Exercises", "    chapters:"]
    lines += [f"      - file: exercises/{name}" for name in exercises]
    lines += ["  - caption: More", "    chapters:", "      - file: teachers", "      - file: library"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# 4. Build.

@dataclass
class SiteResult:
    html: Path
    lessons: list[Lesson]
    seconds: float

    @property
    def errors(self) -> list[str]:
        return [error for lesson in self.lessons for error in lesson.errors]


def build(root=".", out="build/site", *, profile: str = "cpu", jobs: int = 2, timeout: int = 1800, only=None,
          log=print) -> SiteResult:
    """Execute the lessons of ``root/notebooks`` in ``profile`` and build the site in ``out``.

    ``jobs`` lessons run at once, each kernel on one thread (``OMP_NUM_THREADS=1``) when ``jobs > 1``. Two, the
    default, suits a 2-core laptop: the lessons' small networks gain little from a second thread (lesson 04 took
    527 s on one, 532 s on two), so two lessons side by side take about half the time. One thread per kernel also
    makes the site's numbers independent of how many cores the machine has: torch sums in another order on another
    number of threads, and each run then takes another path from the same seed (the lessons' claims were checked
    on one thread and on two; benchmarks/README.md). ``jobs=1`` runs one kernel with torch's own thread count.
    ``only`` (names such as ``"00_start_here"``) limits the lessons, for a quick look at one page. Returns where
    the HTML is (``out/_build/html/index.html`` opens it), each lesson's run, and the seconds taken; a lesson whose
    cells raised is still built, so that its page shows the traceback, and is listed in ``errors``.
    """
    if profile not in ("quick", "cpu", "gpu"):
        raise ValueError(f"profile must be 'quick', 'cpu' or 'gpu', not {profile!r}.")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs is how many lessons run at once: a whole number from 1, not {jobs!r}.")
    start = time.perf_counter()
    root, out = Path(root).resolve(), Path(out).resolve()
    notebooks = sorted((root / "notebooks").glob(LESSON_FILES))
    if only:
        notebooks = [path for path in notebooks if path.stem in set(only)]
    if not notebooks:
        raise FileNotFoundError(f"no lessons to build in {root / 'notebooks'} (only={only!r}); run "
                                "`ftcourse site` from the course folder, or name it with --root.")
    book = _fresh_book_folder(out / "book")
    readme = (root / "README.md").read_text()
    exercise_paths = sorted((root / "exercises").glob(LESSON_FILES))
    exercise_notebooks = {path.stem: json.loads(path.read_text()) for path in exercise_paths}
    exercises = {lesson_number(stem): (stem, title_of(notebook)) for stem, notebook in exercise_notebooks.items()}

    library = library_digest()

    def run(path: Path) -> Lesson:
        lesson = execute(path, profile=profile, cache_dir=out / "executed" / profile, library=library,
                         timeout=timeout, threads=1 if jobs > 1 else None)  # side by side: one core each
        log(f"{path.name}: " + ("outputs from the cache" if lesson.cached else f"ran in {lesson.seconds:.0f} s")
            + "".join(f"\n  raised: {error}" for error in lesson.errors))
        return lesson

    log(f"running {len(notebooks)} lesson{'s' if len(notebooks) > 1 else ''} in the {profile} profile, "
        f"{min(jobs, len(notebooks))} at a time ...")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        lessons = list(pool.map(run, notebooks))

    for folder in ("lessons", "exercises", "figures"):
        (book / folder).mkdir()
    for folder in ("lessons", "exercises", "."):
        (book / folder / "colab-badge.svg").write_text(COLAB_BADGE_SVG)
    by_lesson = {lesson.name: exercises[lesson_number(lesson.name)] for lesson in lessons
                 if lesson_number(lesson.name) in exercises}
    for lesson in lessons:
        page = prepare_lesson(lesson.notebook, *by_lesson.get(lesson.name, (None, "")), profile=profile)
        (book / "lessons" / lesson.path.name).write_text(json.dumps(page))
        figure = first_figure(lesson.notebook)
        if figure:
            (book / "figures" / f"{lesson.name}.png").write_bytes(figure)
    for stem, notebook in exercise_notebooks.items():
        (book / "exercises" / f"{stem}.ipynb").write_text(json.dumps(prepare_exercise(notebook)))
    (book / "index.md").write_text(landing_page(lessons, readme, by_lesson))
    (book / "teachers.md").write_text(teachers_page(readme, [p.stem for p in exercise_paths]))
    (book / "library.md").write_text(library_page(readme))
    (book / "_config.yml").write_text(book_config("ftcourse"))
    (book / "_toc.yml").write_text(table_of_contents(lessons, [p.stem for p in exercise_paths]))

    log("building the HTML with Jupyter Book ...")
    html = run_jupyter_book(book, out)
    seconds = time.perf_counter() - start
    log(f"done in {seconds:.0f} s in all; open {html / 'index.html'}")
    return SiteResult(html=html, lessons=lessons, seconds=seconds)


def run_jupyter_book(book: Path, out: Path) -> Path:
    """``jupyter-book build BOOK --path-output OUT``, through this Python; the folder of the HTML."""
    try:
        import jupyter_book  # noqa: F401
    except ImportError:
        raise SystemExit("The site needs Jupyter Book 1: pip install -e \".[site]\" (or pip install "
                         "'jupyter-book>=1,<2' sphinx-mathjax-offline).") from None
    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(book),
               "--path-output", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"jupyter-book build failed (exit {result.returncode}):\n{tail}")
    return out / "_build" / "html"


def _fresh_book_folder(book: Path) -> Path:
    """An empty ``book`` folder; an existing one is cleared only if this module made it (it has the marker)."""
    if book.exists():
        if not (book / MARKER).exists():
            raise FileExistsError(f"{book} exists and was not made by `ftcourse site`; choose another --out, or "
                                  "move that folder away.")
        shutil.rmtree(book)
    book.mkdir(parents=True)
    (book / MARKER).write_text("made by `ftcourse site`; rebuilt from scratch on each build\n")
    return book


# ----------------------------------------------------------------------------------------------------------------
# 5. A Sphinx extension (``extra_extensions`` in the book's configuration names this module).

def _one_of_each_script(app, pagename, templatename, context, doctree) -> None:
    """Drop a script that a page would load twice. sphinx-thebe adds its inline ``const THEBE_JS_URL = ...`` once
    per reading of the sources, and Jupyter Book reads them twice, so every page declared the constant twice and
    the browser logged a SyntaxError. (The book's ``html_context`` sets ``default_mode``: without it the theme
    logged an "invalid theme mode" error on a first visit.)"""
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", None) or "",  # an inline script's is None or "", by who added it
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app) -> dict:
    """Sphinx's entry point for this module as an extension of the site's build."""
    app.connect("html-page-context", _one_of_each_script)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
