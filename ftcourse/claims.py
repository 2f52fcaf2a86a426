"""Claims: how a lesson states a result, checks it on this run, and says what happened, in one readable line.

Every result a lesson's prose states is a claim that the lesson's own run checks, and a claim is always something
*positive* the data show. For a paired difference d (:func:`ftcourse.stats.paired_difference`: method A minus
method B, seed by seed, with its 90% interval [low, high]) there are three kinds:

- ``beats=m``: "A beats B by more than m", when ``low > m``;
- ``matches=m``: "A matches B within ±m", when ``-m < low`` and ``high < m`` (an equivalence test: the whole
  interval inside the margin, which needs as much evidence as an effect does);
- ``not_below=m``: "A is not more than m below B", when ``low > -m`` (non-inferiority).

A result that is not a difference between two methods (an ordering, a threshold, a shape) is ``holds=...`` with
what was ``measured`` in words.

What is never a claim: "cannot tell", "no clear difference", "the interval spans zero". Those test for ignorance,
and any stronger evidence (more seeds, another seed set) breaks them. Where three seeds do not settle a question,
the lesson says so in prose and shows the interval.

**When this run disagrees.** Training is a long chain of floating-point sums whose order depends on the CPU's
instructions, the number of threads and the GPU's kernels, and one different last digit sends a run down another
path. With three seeds, an effect near its margin can land on either side. So a failed claim is treated in one of
two ways, set by ``$FTCOURSE_CLAIMS``:

- ``strict`` (the test suite, nbval, ``ftcourse site``): it raises :class:`ClaimFailed`, and the build fails;
- otherwise (a learner's own session): it shows a box with the claim, what the course measured, what this run
  measured and why they can differ, and the lesson goes on.

A claim is only asserted at the sizes where it was measured: in a profile that is not verified (``gpu``, see
:data:`ftcourse.env.VERIFIED_PROFILES`) a failed claim is shown as a box even where claims are strict.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass

import torch

from . import env as course_env
from .stats import describe_difference

MODE_VARIABLE = "FTCOURSE_CLAIMS"
WHERE_CHECKED = ("the cpu profile on a 2-core x86 CPU: the lessons' seeds (0, 1, 2) with one and with two threads, "
                 "and a second set (3, 4, 5) with one thread (benchmarks/README.md says what was reworded to hold "
                 "on both)")
WHY_RUNS_DIFFER = ("A training run is a long chain of floating-point sums. Their order depends on the CPU's "
                   "instructions, the number of threads and, on a GPU, its kernels; one different last digit sends "
                   "a run down another path, and with three seeds an effect close to its margin can land on either "
                   "side. Try more seeds (FTCOURSE_SEEDS=0,1,2,3,4,5 before starting Jupyter): a real effect "
                   "keeps its sign and its interval narrows.")


class ClaimFailed(AssertionError):
    """A claim that this run did not bear out, raised where claims are strict (tests, nbval, the site build)."""


@dataclass(frozen=True)
class Verdict:
    """One checked claim: what was claimed, the rule it was checked by, what was measured, and whether it held.

    ``bool(verdict)`` is whether it held; ``str(verdict)`` is the one line a lesson prints.
    """

    statement: str
    rule: str
    measured: str
    held: bool

    def __bool__(self) -> bool:
        return self.held

    def __str__(self) -> str:
        mark = "✓ holds" if self.held else "✗ FAILS"
        return f"{mark}: {self.statement} [{self.rule}] measured {self.measured}"


def strict() -> bool:
    """Whether a failed claim raises: ``$FTCOURSE_CLAIMS`` is ``strict`` (the test suite and the site build set it)
    and the profile in force is one whose claims were verified."""
    return (os.environ.get(MODE_VARIABLE, "").strip().lower() == "strict"
            and course_env.active_profile() in course_env.VERIFIED_PROFILES)


def claim(statement: str, difference: dict | None = None, *, beats: float | None = None,
          matches: float | None = None, not_below: float | None = None, holds: bool | None = None,
          measured: str = "", fmt: str = "+.3f") -> Verdict:
    """Check one claim on this run, print it as one line, and return its :class:`Verdict`.

    Either a paired ``difference`` with exactly one of ``beats``, ``matches`` or ``not_below`` (the margin m, in
    the difference's own units), or ``holds=`` a boolean with what was ``measured`` in words.

    >>> from ftcourse.stats import paired_difference
    >>> d = paired_difference([0.9, 0.8, 0.85], [0.6, 0.55, 0.62])
    >>> verdict = claim("fine-tuning beats scratch by more than 0.15", d, beats=0.15)
    ✓ holds: fine-tuning beats scratch by more than 0.15 [low end > +0.150] measured +0.260 (90% interval +0.199 to +0.321)
    """
    if difference is None:
        if holds is None or any(m is not None for m in (beats, matches, not_below)):
            raise TypeError("claim() takes a paired difference with beats=, matches= or not_below=, or holds= "
                            "with measured= for a result that is not a difference.")
        verdict = Verdict(statement, "checked on this run", measured or str(bool(holds)), bool(holds))
    else:
        margins = {"beats": beats, "matches": matches, "not_below": not_below}
        given = [name for name, m in margins.items() if m is not None]
        if len(given) != 1 or holds is not None:
            raise TypeError(f"claim({statement!r}, difference, ...) needs exactly one of beats=, matches= or "
                            f"not_below= (the margin), got {given or 'none'}.")
        kind, m = given[0], float(margins[given[0]])
        if not math.isfinite(m) or (kind != "beats" and m <= 0):
            raise ValueError(f"The margin of {kind}= must be a finite number (and positive for {kind}=), got {m}.")
        low, high = difference["low"], difference["high"]
        if kind == "beats":
            rule, held = f"low end > {m:{fmt}}", low > m
        elif kind == "matches":
            rule, held = f"interval inside ±{m:.3g}", -m < low and high < m
        else:
            rule, held = f"low end > {-m:{fmt}}", low > -m
        text = describe_difference(difference, fmt) + (f"; {measured}" if measured else "")
        verdict = Verdict(statement, rule, text, bool(held))
    print(verdict)
    if not verdict.held:
        if strict():
            raise ClaimFailed(f"{verdict}\nThis run: {this_run()}. The claim was checked in {WHERE_CHECKED}.")
        show_disagreement(verdict)
    return verdict


def this_run() -> str:
    """The profile, seeds, device and threads of this run, in words."""
    profile = course_env.active_profile()
    seeds = course_env.pick_seeds(course_env.PROFILES[profile])
    device = course_env.pick_device()
    return (f"profile {profile}, seeds {', '.join(map(str, seeds))}, {course_env.device_name(device)}, "
            f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}")


def disagreement_rows(verdict: Verdict) -> list[tuple[str, str]]:
    """What the box says, row by row: the claim, where the course checked it, this run, why runs differ."""
    return [("The claim", f"{verdict.statement} ({verdict.rule})"), ("The course checked", WHERE_CHECKED),
            ("This run measured", f"{verdict.measured} ({this_run()})"), ("Why they can differ", WHY_RUNS_DIFFER)]


def disagreement_text(verdict: Verdict) -> str:
    """The box a learner sees when a claim fails on their run, as plain text."""
    rows = "".join(f"  {name + ':':<20} {text}\n" for name, text in disagreement_rows(verdict))
    return f"This run disagrees with one of the course's claims.\n{rows}The lesson goes on."


def show_disagreement(verdict: Verdict) -> None:
    """Show :func:`disagreement_text` as a box in a notebook, or as text elsewhere."""
    if not course_env.in_notebook():
        print(disagreement_text(verdict))
        return
    from IPython.display import HTML, display

    body = "".join(f"<tr><th style='text-align:left;vertical-align:top;padding-right:1em'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in disagreement_rows(verdict))
    display(HTML(f"<div class='ftcourse-claim-disagrees' style='border:2px solid #d97706;border-radius:6px;"
                 f"padding:0.6em 1em;margin:0.5em 0;background:#fffbeb'>"
                 f"<b>This run disagrees with one of the course's claims.</b><table>{body}</table>"
                 f"<i>The lesson goes on.</i></div>"))
