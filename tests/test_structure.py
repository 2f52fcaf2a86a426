"""The shape of the package: imports between its modules point down the layers, never round in a cycle, and never
reach for another module's private names.

The modules are read with ``ast``, not imported, so every import counts: those at the top of a file and those
inside functions (a lazy import is still a dependency). The layers, bottom to top; a module may import from its own
layer or any layer below it (this table is the one the test checks):

    0  __init__ files downloads versions plots diagrams stats progress grading grading.frames grading.sandbox grading._sandbox_setup   leaves: the standard library and third-party packages only
    1  models                                    networks and checkpoint files; know nothing of training
    2  env lr                                    device and profile; learning-rate schedules
    3  data                                      images as device tensors, augmentation, real datasets
    4  lab textlab                               the procedural source and target tasks, images and text
    5  train                                     the training engine: fit, evaluate, predict
    6  rangetest transfer measure selfsup pretrain efficient dense protocol   tools built on the engine; self-supervised pretraining; dense tasks and heads; the fair-comparison protocol
    7  experiments recipe sweep capstone text    whole experiments and grids of them; the practitioner's recipe; the capstone's target; BERT
    8  tour widgets claims                       what the lessons show; claims checked on each run
    9  checks exercises                          exercise feedback, exercises generated from solutions
    10 grading.grade grading.worker grading.table grading.course_secret grading.gradescope site   the autograder, its sandboxed side, its tables, the course secret and its Gradescope bundle; the website
    11 cli                                       the ftcourse command

A module not in the table fails the test until it is placed: where a new module sits is a design decision. A module
of a subpackage goes by its dotted name (``grading.frames``; the subpackage's ``__init__`` is ``grading``), and its
relative imports are read from where it sits (``from .. import checks`` in ``grading/grade.py`` is ``checks``).

The autograder (``grading``) is a security boundary: only ``cli`` imports it from outside, and no notebook does.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = "ftcourse"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def layers_from_docstring(doc: str) -> list[list[str]]:
    """The table in this file's docstring: the lines that start with a layer number, bottom layer first."""
    rows = re.findall(r"^\s+(\d+)\s+((?:[\w.]+ )*[\w.]+)\s{2,}", doc, re.M)
    assert [int(number) for number, _ in rows] == list(range(len(rows))), "layers must be numbered 0, 1, 2, ..."
    return [names.split() for _, names in rows]


LAYERS = layers_from_docstring(__doc__)
LAYER = {module: level for level, names in enumerate(LAYERS) for module in names}


# ----------------------------------------------------------------------------------------------------------------
# Reading the imports.

def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class Imports:
    """The intra-package imports of one module's source, and its uses of other modules' private names.

    ``modules`` is the set of the package's module names (``"train"``, ``"grading.frames"``...); the package itself
    is ``"__init__"``. ``package`` is where the module sits, for its relative imports: ``""`` at the top, ``"grading"``
    for ``grading/grade.py`` and for ``grading/__init__.py``. ``edges`` holds ``(imported module, line)``;
    ``private`` holds ``(line, what)`` for every private name of another module that this one imports or reads.
    """

    def __init__(self, name: str, source: str, modules: set[str], package: str = ""):
        self.name, self.modules, self.package = name, modules, package
        self.edges: list[tuple[str, int]] = []
        self.private: list[tuple[int, str]] = []
        self.aliases: dict[str, str] = {}  # local name -> the module of the package it is bound to
        nodes = list(ast.walk(ast.parse(source)))
        # Imports first: a module bound by an import inside one function is bound for the whole file here, which
        # may over-report a private use but never misses one.
        for node in nodes:
            if isinstance(node, ast.Import):
                self._read_import(node)
            elif isinstance(node, ast.ImportFrom):
                self._read_import_from(node)
        for node in nodes:
            if isinstance(node, ast.Attribute):
                self._read_attribute(node)

    def _depend(self, module: str, line: int) -> None:
        if module != self.name:
            self.edges.append((module, line))

    def _module(self, parts: list[str]) -> str:
        """The package's module that the dotted path ``parts`` (below ``ftcourse``) names or sits in."""
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in self.modules:
                return ".".join(parts[:end])
        return "__init__"

    def _target(self, node: ast.ImportFrom) -> list[str] | None:
        """What ``from X import ...`` imports from, as a path below ``ftcourse``; None for another package."""
        module = node.module.split(".") if node.module else []
        if node.level == 0:
            return module[1:] if module and module[0] == PACKAGE else None
        base = self.package.split(".") if self.package else []
        if node.level - 1 > len(base):
            return None  # above the package: not ours
        return base[:len(base) - (node.level - 1)] + module

    def _read_import(self, node: ast.Import) -> None:  # import ftcourse / import ftcourse.train [as t]
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] != PACKAGE:
                continue
            module = self._module(parts[1:])
            self._depend(module, node.lineno)
            self.aliases[alias.asname or PACKAGE] = module if alias.asname else "__init__"

    def _read_import_from(self, node: ast.ImportFrom) -> None:
        target = self._target(node)
        if target is None:
            return  # another package
        for alias in node.names:
            as_module = ".".join(target + [alias.name])
            if as_module in self.modules:  # from . import train  /  from .grading import frames
                self._depend(as_module, node.lineno)
                self.aliases[alias.asname or alias.name] = as_module
                continue
            module = self._module(target)  # a name that module defines (a package's, for `from . import x`)
            self._depend(module, node.lineno)
            if is_private(alias.name) and module != self.name:
                self.private.append((node.lineno, f"imports {alias.name} from {module}"))

    def _read_attribute(self, node: ast.Attribute) -> None:  # train._as_data(...), ftcourse.train._as_data(...)
        value, module = node.value, None
        if isinstance(value, ast.Name):
            module = self.aliases.get(value.id)
        elif (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
              and self.aliases.get(value.value.id) == "__init__" and value.attr in self.modules):
            module = value.attr
        if module is not None and module != self.name and is_private(node.attr):
            self.private.append((node.lineno, f"uses {module}.{node.attr}"))


def module_name(path: Path, root: Path = ROOT) -> str:
    """A module's name in the table: ``train``, ``grading.frames``; ``grading`` for a subpackage's ``__init__``;
    ``__init__`` for the package's own."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def package_imports(root: Path = ROOT) -> dict[str, Imports]:
    """Every module of the package and its subpackages (``__init__`` files included) with its imports."""
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py")) if "__pycache__" not in path.parts}
    modules = set(files) - {"__init__"}

    def package_of(name: str, path: Path) -> str:
        if name == "__init__":
            return ""
        return name if path.name == "__init__.py" else name.rpartition(".")[0]

    return {name: Imports(name, path.read_text(encoding="utf-8"), modules, package_of(name, path))
            for name, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per group of modules that import each other round in a circle, e.g. ``["lr", "train", "lr"]``.

    The groups are the strongly connected components (Tarjan's algorithm); within each, a path that goes round.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_round_trip(graph, group) for group in sorted(groups)]


def _round_trip(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, through the group (breadth-first)."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return paths[node] + [start]
                if nxt in members and nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {group}")


# ----------------------------------------------------------------------------------------------------------------
# The checker, on examples.

def test_the_checker_finds_lazy_imports_private_names_and_private_attributes():
    source = (
        "from . import train, lab as procedural\n"
        "from .data import Task\n"
        "import ftcourse.models\n"
        "def f(x):\n"
        "    from .train import _as_data, fit\n"
        "    procedural._render(x)\n"
        "    ftcourse.models._cache.clear()\n"
        "    return train._autocast(x), train.__doc__, x._private\n")
    found = Imports("measure", source, {"train", "lab", "data", "models", "measure"})
    assert sorted({module for module, _ in found.edges}) == ["data", "lab", "models", "train"]
    assert sorted(what for _, what in found.private) == [
        "imports _as_data from train", "uses lab._render", "uses models._cache", "uses train._autocast"]


def test_the_checker_reads_a_subpackages_relative_imports_from_where_it_sits():
    source = ("from .. import checks\n"
              "from . import frames\n"
              "from .sandbox import start\n"
              "from ..train import fit\n"
              "from ftcourse.grading import worker\n"
              "import ftcourse.grading.worker as w\n"
              "frames._rebuild(w._private)\n")
    modules = {"checks", "train", "grading", "grading.frames", "grading.sandbox", "grading.worker", "grading.grade"}
    found = Imports("grading.grade", source, modules, package="grading")
    assert sorted({module for module, _ in found.edges}) == [
        "checks", "grading.frames", "grading.sandbox", "grading.worker", "train"]
    assert sorted(what for _, what in found.private) == ["uses grading.frames._rebuild", "uses grading.worker._private"]
    top = Imports("cli", "from .grading.grade import grade\nfrom . import grading\n", modules)
    assert sorted({module for module, _ in top.edges}) == ["grading", "grading.grade"]
    assert module_name(ROOT / "grading" / "__init__.py") == "grading"
    assert module_name(ROOT / "grading" / "frames.py") == "grading.frames"
    assert module_name(ROOT / "__init__.py") == "__init__"


def test_a_cycle_is_reported_as_a_round_trip():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_layers_are_read_from_the_docstring():
    assert LAYERS[0][0] == "__init__" and LAYERS[-1] == ["cli"]
    assert len(LAYER) == sum(len(names) for names in LAYERS), "a module is in two layers"


def test_the_readmes_table_of_the_library_is_this_table():
    """The README lists the modules by layer for readers; it must say what this test enforces (a row may span
    several layers, "9–11")."""
    readme = (ROOT.parent / "README.md").read_text()
    section = readme.split("## The library", 1)[1].split("\n## ", 1)[0]
    listed = {}
    for first, last, names in re.findall(r"^\| (\d+)(?:–(\d+))? \| ([^|]+) \|", section, re.M):
        for name in re.findall(r"`([\w.]+)`", names):
            listed[name] = range(int(first), int(last or first) + 1)
    public = {name for name in LAYER if not name.rpartition(".")[2].startswith("_")}
    assert set(listed) == public, (f"README's table lacks {sorted(public - set(listed))} and names "
                                   f"{sorted(set(listed) - public)} that are not modules")
    wrong = {name: LAYER[name] for name, layers in listed.items() if LAYER[name] not in layers}
    assert not wrong, f"README's table puts these modules in other layers than tests/test_structure.py: {wrong}"


# ----------------------------------------------------------------------------------------------------------------
# The package.

@pytest.fixture(scope="module")
def imports() -> dict[str, Imports]:
    return package_imports()


def test_every_module_has_a_layer(imports):
    missing = sorted(set(imports) - set(LAYER))
    gone = sorted(set(LAYER) - set(imports))
    assert not missing, (f"{missing} not in the layers of tests/test_structure.py: add each to the docstring's "
                         f"table, at the layer of the lowest module that may import it.")
    assert not gone, f"{gone} are in the layers of tests/test_structure.py but not in {PACKAGE}/: remove them."


def test_no_import_cycles(imports):
    graph = {name: {module for module, _ in found.edges} for name, found in imports.items()}
    lines = {(name, module): line for name, found in imports.items() for module, line in reversed(found.edges)}
    cycles = find_cycles(graph)
    report = ["  " + " -> ".join(cycle) + "   (" + ", ".join(
        f"{a}.py:{lines[a, b]}" for a, b in zip(cycle, cycle[1:])) + ")" for cycle in cycles]
    assert not cycles, "Modules import each other in a cycle:\n" + "\n".join(report)


def test_no_module_uses_another_modules_private_names(imports):
    offenders = [f"  {name}.py:{line}: {what}" for name, found in sorted(imports.items())
                 for line, what in sorted(found.private)]
    assert not offenders, ("A module reaches for another's private (_underscore) names; make the name public in "
                           "the module that owns the idea, and use it from both:\n" + "\n".join(offenders))


def test_imports_point_down_the_layers(imports):
    upward = [f"  {name}.py:{line}: {name} (layer {LAYER[name]}) imports {module} (layer {LAYER[module]})"
              for name, found in sorted(imports.items()) if name in LAYER
              for module, line in found.edges if module in LAYER and LAYER[module] > LAYER[name]]
    table = "\n".join(f"  {level:>2}  {' '.join(names)}" for level, names in enumerate(LAYERS))
    assert not upward, ("Imports that point up the layers (a design question: move the code, or the layer):\n"
                        + "\n".join(upward) + "\nThe layers, bottom to top:\n" + table)


def test_only_the_command_line_imports_the_autograder(imports):
    """The grader (``grading``) is a security boundary that no lesson or learner needs: inside the package only
    ``cli`` (``ftcourse grade``) imports it, and no notebook of the course does."""
    inside = [f"  {name}.py:{line}: imports {module}" for name, found in sorted(imports.items())
              if name != "cli" and not (name + ".").startswith("grading.")
              for module, line in found.edges if (module + ".").startswith("grading.")]
    assert not inside, "Modules outside ftcourse/grading import the autograder:\n" + "\n".join(inside)
    notebooks = [path for folder in ("notebooks", "solutions", "exercises")
                 for path in sorted((ROOT.parent / folder).glob("*.ipynb"))]
    assert notebooks
    grading = [path.name for path in notebooks if re.search(r"ftcourse\.grading|from ftcourse import[^\n]*\bgrading\b",
                                                             path.read_text(encoding="utf-8"))]
    assert not grading, f"notebooks that import the autograder: {grading}"
