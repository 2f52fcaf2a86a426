"""The course in Google Colab: its install cell must work with what Colab has, and change none of it.

Colab pins its own packages (``google-colab`` requires ``ipython==7.34.0``, for one); a requirement of ``ftcourse``
that Colab's version does not meet makes pip upgrade that package in the install cell, and users report broken
runtimes from exactly that. ``tests/colab/`` holds Colab's published package lists and Python version (see its
README); these tests read ``pyproject.toml`` as pip would (``packaging``) and hold every requirement to them.
"""

import json
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "colab"
RUNTIMES = ["pip-freeze.txt", "pip-freeze.gpu.txt"]


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def colab_versions(name: str) -> dict[str, Version]:
    """The packages of one recorded Colab runtime: ``name==1.2`` lines, and ``name @ URL`` lines whose wheel file
    names the version (``torch-2.11.0+cpu-cp313-...whl``)."""
    versions = {}
    for line in (RECORDED / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "==" in line:
            package, version = line.split("==", 1)
        elif " @ " in line:
            package, url = line.split(" @ ", 1)
            match = re.search(r"/([^/]+?)-(\d[^-/]*)-[^/]*\.whl$", url.replace("%2B", "+"))
            if not match:
                continue  # a source tree such as google-colab itself: no version to hold anything to
            version = match.group(2)
        else:
            continue
        versions[canonicalize_name(package)] = Version(version.strip())
    return versions


def colab_python() -> Version:
    text = (RECORDED / "os-info.txt").read_text(encoding="utf-8")
    return Version(re.search(r"^Python (\d+\.\d+\.\d+)", text, re.M).group(1))


def requirements() -> list[Requirement]:
    """What the install cell installs: the dependencies, and the extra that a lesson's online path uses."""
    meta = project()
    return [Requirement(r) for r in [*meta["dependencies"], *meta["optional-dependencies"]["online"]]]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_colab_already_has_a_version_of_every_requirement_that_meets_it(runtime):
    versions = colab_versions(runtime)
    unmet, missing = [], []
    for requirement in requirements():
        version = versions.get(canonicalize_name(requirement.name))
        if version is None:
            missing.append(requirement.name)
        elif not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement} (Colab has {version})")
    assert not unmet, f"the install cell would upgrade what Colab pins: {unmet}"
    assert not missing, f"not in Colab's list, so installed fresh there (check it pins nothing Colab has): {missing}"


def test_ipython_stays_at_colabs_version():
    """google-colab pins IPython 7.34: the grader's worker needs IPython, with a bound that 7.34 meets."""
    ipython = next(r for r in requirements() if canonicalize_name(r.name) == "ipython")
    assert ipython.specifier.contains(colab_versions("pip-freeze.txt")["ipython"])
    assert colab_versions("pip-freeze.txt")["ipython"] == Version("7.34.0")


def test_colabs_python_is_one_the_course_declares():
    meta = project()
    python = colab_python()
    assert python in SpecifierSet(meta["requires-python"])
    declared = {c.rsplit(" :: ", 1)[-1] for c in meta["classifiers"]
                if c.startswith("Programming Language :: Python :: 3.")}
    assert f"{python.major}.{python.minor}" in declared, declared


def test_the_install_cell_of_every_notebook_upgrades_nothing():
    """The first code cell installs ftcourse in Colab: no --upgrade or --force-reinstall, which would replace
    Colab's packages even where they meet the requirements."""
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        install = ["".join(c["source"]) for c in cells
                   if c["cell_type"] == "code" and "google.colab" in "".join(c["source"])]
        assert install, f"{path.name} has no Colab install cell"
        for source in install:
            assert not re.search(r"(-U\b|--upgrade|--force-reinstall|--no-deps)", source), (path.name, source)
