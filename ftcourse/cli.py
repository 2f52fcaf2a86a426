"""The ``ftcourse`` command.

- ``ftcourse tour``: the main job -- scratch vs linear probe vs fine-tuning on two lab targets, a table and a figure.
- ``ftcourse check``: versions, device, precision, and a 5-second training run that shows the loop works here.
- ``ftcourse pretrain``: make a shipped lab checkpoint again from its recipe, into your cache folder
  (or the file ``--out`` names); ``--source text`` makes the text lab's BERT (a folder).
- ``ftcourse exercises [--check]``: generate exercises/ from solutions/ (or check that they agree).
- ``ftcourse secret new course.secret``: the course secret, made once (it fixes the capstone's test set).
- ``ftcourse grade SUBMISSIONS --out grades.csv --secret-file course.secret``: run students' notebooks (``--jobs``
  at a time) and write a grade table; ``--feedback DIR`` writes a file per student.
- ``ftcourse canvas grades.csv --roster export.csv``: the table as a Canvas gradebook import.
- ``ftcourse autograder 02 --secret-file course.secret``: a Gradescope autograder zip that grades assignment 02.
- ``ftcourse site [--profile cpu] [--out build/site]``: the course as a website, every lesson with its outputs.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path


# The smoke test's speed on one thread of the project's 2-core x86 test machine (measured: 2,495 images/s; 3,787 on
# two threads). Slower than a fifth of it, on any machine, something is wrong: most often other jobs on the cores.
SMOKE_IMAGES_PER_SECOND = 2_500
SLOW_FACTOR = 5


def check(args) -> int:
    import numpy
    import torch
    import torchvision

    from . import __version__
    from .env import busy_machine_warning, setup, usable_cores
    from .models import resnet
    from .train import evaluate, fit

    print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"numpy {numpy.__version__}, ftcourse {__version__}")
    build = (f"CUDA {torch.version.cuda}" if torch.version.cuda else
             f"ROCm {torch.version.hip}" if getattr(torch.version, "hip", None) else "CPU-only")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        found = (f"{props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
                 f"{props.major}.{props.minor}")
    else:
        found = "none found"
    print(f"torch build: {build}; GPU: {found}")
    if build != "CPU-only" and not torch.cuda.is_available():
        print(f"  (this {build} build carries GPU libraries this machine cannot use; the CPU build is about 3 GB "
              f"smaller: pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu)")
    env = setup(seed=0, profile=args.profile)
    print(f"precision: {env.precision}")

    # A problem any network learns in seconds: is the image bright or dark?
    g = torch.Generator().manual_seed(0)
    brightness = torch.rand(1024, generator=g)
    noise = torch.randint(-60, 60, (1024, 3, 32, 32), generator=g)
    images = (brightness.view(-1, 1, 1, 1) * 255 + noise).clamp(0, 255).to(torch.uint8)
    labels = (brightness > 0.5).long()
    model = resnet(2, width=16, stem_stride=2).to(env.device)  # the size of the course's lab model
    start = time.perf_counter()
    history = fit(model, (images, labels), epochs=2, lr=0.05, batch_size=128, progress=False, sync_every=8)
    accuracy = evaluate(model, (images, labels))["accuracy"]
    speed = history.images_per_second
    print(f"smoke test: 2 epochs in {time.perf_counter() - start:.1f} s, {speed:,.0f} images/s, "
          f"loss {history.train_loss[0]:.3f} -> {history.train_loss[-1]:.3f}, accuracy {accuracy:.2f}")
    learns = history.train_loss[-1] < history.train_loss[0] and history.diverged is None
    slow = speed < SMOKE_IMAGES_PER_SECOND / SLOW_FACTOR
    if not learns:
        print("PROBLEM: the loss did not fall.")
    elif slow:
        busy = busy_machine_warning()
        print(f"PROBLEM: the loop learns, but at {speed:,.0f} images/s, more than {SLOW_FACTOR}x slower than one "
              f"core of a 2-core laptop-class CPU ({SMOKE_IMAGES_PER_SECOND:,} images/s). "
              + (f"Why: {busy}" if busy else f"Is something else using the CPU? torch uses "
                 f"{torch.get_num_threads()} thread(s) on {usable_cores()} core(s); try OMP_NUM_THREADS=1."))
    else:
        print("OK: the training loop works on this machine.")
    return 0 if learns and not slow else 1


def tour(args) -> int:
    from .tour import run_tour

    run_tour(profile=args.profile, out=args.out)
    return 0


def pretrain(args) -> int:
    from .env import pick_device
    from .pretrain import RECIPES, pretrain as run_recipe, quick_version, save_checkpoint, user_checkpoint_dir

    names = [*RECIPES, "text"] if args.source == "all" else [args.source]
    unknown = [name for name in names if name != "text" and name not in RECIPES]
    if unknown:
        raise SystemExit(f"--source {unknown[0]!r}: no such checkpoint; choose one of {', '.join(RECIPES)}, text "
                         f"or all.")
    if args.out and len(names) > 1:
        raise SystemExit("--out names one file: use it with one --source, not 'all'.")
    device = args.device or pick_device()
    for name in names:
        if name == "text":
            pretrain_text(args, user_checkpoint_dir())
            continue
        recipe = quick_version(RECIPES[name]) if args.quick else RECIPES[name]
        out = Path(args.out) if args.out else user_checkpoint_dir() / f"{name}.pt"
        task = recipe["data"].get("task", "source")
        print(f"pretraining {name} on the lab task {task!r} ({'quick miniature' if args.quick else 'full recipe'}) "
              f"on {device}")
        model, info = run_recipe(recipe, device=device, progress=None)
        digest = save_checkpoint(model, recipe, info, out)
        score = (f"source test accuracy {info['source_test_accuracy']:.3f}" if "source_test_accuracy" in info else
                 f"source probe accuracy {info['source_probe_accuracy']:.3f} (a linear probe; pretraining saw no label)")
        print(f"{score}, {info['seconds']:.0f} s; "
              f"wrote {out} (sha256 {digest[:16]}...)\n"
              f"load it with: ftcourse.models.load_checkpoint({str(out)!r})")
    return 0


def pretrain_text(args, default_dir) -> None:
    """The text checkpoint: a folder (``save_pretrained``), with its record ``NAME.json`` beside it."""
    from . import text

    recipe = text.quick_version(text.RECIPE) if args.quick else text.RECIPE
    out = Path(args.out) if args.out else default_dir / text.NAME
    size = "quick miniature" if args.quick else "full recipe"
    print(f"pretraining the text lab's BERT with masked language modelling ({size}, "
          f"{recipe['train']['max_steps']} steps; Trainer uses the GPU if there is one)")
    model, tokenizer, info = text.pretrain(recipe)
    digests = text.save_checkpoint(model, tokenizer, recipe, info, out)
    print(f"masked-word accuracy {info['mlm_accuracy']:.3f}, {info['seconds']:.0f} s; wrote {out}/ "
          f"(model.safetensors sha256 {digests['model.safetensors'][:16]}...)\n"
          f"load it with: ftcourse.text.pretrained({str(out)!r})")


def exercises(args) -> int:
    from .exercises import generate

    paths = generate(args.root, check=args.check)
    if args.check:
        if paths:
            print("Out of sync with solutions/ (run `ftcourse exercises` to regenerate):\n  " + "\n  ".join(paths))
            return 1
        print("exercises/ is in sync with solutions/.")
        return 0
    print("wrote " + ", ".join(paths) if paths else "exercises/ was already up to date.")
    return 0


def grade(args) -> int:
    from .grading.grade import grade as run_grade

    try:
        run_grade(args.submissions, args.out, timeout=args.timeout, cell_timeout=args.cell_timeout,
                  resume=args.resume, only=args.only, secret=args.secret, secret_file=args.secret_file,
                  weights=args.weight, jobs=args.jobs, feedback=args.feedback,
                  mode=args.container or args.sandbox)
    except (FileNotFoundError, ValueError, PermissionError) as error:
        print(f"ftcourse grade: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished row is in {args.out}; run again with --resume to go on.",
              file=sys.stderr)
        return 130
    return 0


def secret(args) -> int:
    from .grading import course_secret

    try:
        value = course_secret.create(args.path, replace=args.replace)
    except (FileExistsError, OSError) as error:
        print(f"ftcourse secret: {error}", file=sys.stderr)
        return 2
    print(f"wrote the course secret to {args.path} (mode 0600, fingerprint {course_secret.fingerprint(value)}). "
          f"Keep it, and grade with --secret-file {args.path}.")
    return 0


def canvas(args) -> int:
    from .grading.table import canvas_export, read_table

    try:
        rows = read_table(args.grades)
        if not rows:
            raise ValueError(f"{args.grades} holds no grades (run ftcourse grade first).")
        result = canvas_export(rows, args.roster, args.out, match=args.match)
    except (FileNotFoundError, ValueError) as error:
        print(f"ftcourse canvas: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: import it in Canvas (Grades > Import).")
    if result["unmatched"]:
        print(f"not in the roster (by {args.match}), so not exported: {', '.join(result['unmatched'])}")
    if result["missing"]:
        print(f"in the roster with no graded submission (left empty): {', '.join(result['missing'])}")
    return 0


def autograder(args) -> int:
    from .grading.gradescope import build_bundle

    out = args.out or f"ftcourse-autograder-{args.assignment}.zip"
    try:
        build_bundle(args.assignment, out, secret_file=args.secret_file, weights=args.weight,
                     visibility=args.visibility, wheel=args.wheel)
    except (FileNotFoundError, ValueError, PermissionError, RuntimeError) as error:
        print(f"ftcourse autograder: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} (mode 0600: it holds the course secret). Upload it as the autograder of a Gradescope "
          f"programming assignment (Configure Autograder > Zip file upload; base image Ubuntu 22.04 or later); "
          f"students hand in their notebook of assignment {args.assignment}.")
    return 0


def site(args) -> int:
    from .site import build

    try:
        result = build(args.root, args.out, profile=args.profile, jobs=args.jobs, only=args.only)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"ftcourse site: {error}", file=sys.stderr)
        return 2
    if result.errors:
        print("These cells raised; their pages show the traceback:\n  " + "\n  ".join(result.errors),
              file=sys.stderr)
        return 1
    return 0


PROFILE_HELP = ("how big the experiments are: quick (seconds; a smoke test, whose numbers prove nothing), cpu (minutes "
                "on a laptop; the default) or gpu (more seeds and sizes, for a GPU); default: $FTCOURSE_PROFILE, "
                "else cpu")


def build_parser() -> argparse.ArgumentParser:
    """The command line. It imports nothing heavy (no torch): ``ftcourse --help`` answers at once, and each command
    imports what it needs when it runs."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="ftcourse", description="Fine-tuning and transferability, hands on: the "
                                     "course's command line. `ftcourse COMMAND --help` says more about each command.")
    parser.add_argument("--version", action="version", version=f"ftcourse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, summary, description):
        return sub.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {description}")

    p = command("check", "versions, device and a 5-second training smoke test",
                "Prints the versions of Python, torch and the course, which build of torch is installed (CPU or "
                "CUDA) and whether a GPU was found, then trains a tiny network for two epochs and says whether the "
                "loop works here and how fast.")
    p.add_argument("--profile", choices=["quick", "cpu", "gpu"], default=None, help=PROFILE_HELP)
    p.set_defaults(run=check)
    p = command("tour", "the main job: scratch vs probe vs fine-tune on two lab targets",
                "Trains from scratch, a linear probe and a full fine-tune of the shipped lab checkpoint on two lab "
                "targets, each with its learning rate tuned on validation, and prints the test accuracies with a "
                "figure. Runs are cached: a second tour reads them back.")
    p.add_argument("--profile", choices=["quick", "cpu", "gpu"], default=None, help=PROFILE_HELP)
    p.add_argument("--out", default="ftcourse-tour.png", help="where to write the figure")
    p.set_defaults(run=tour)
    about = ("make the shipped lab checkpoints again from their recipes, in your cache folder (the package's own "
             "files change only when --out names them)")
    p = sub.add_parser("pretrain", help=about, description=about[0].upper() + about[1:] + ".")
    p.add_argument("--source", default="lab",
                   help="which checkpoint: lab (the default, the main one), a sibling's name (see "
                        "ftcourse.models.SHIPPED), text (the text lab's BERT, a folder) or all (every one)")
    p.add_argument("--quick", action="store_true", help="a miniature of the recipe (seconds), for tests")
    p.add_argument("--out", default=None,
                   help="the file to write (default: NAME.pt in $FTCOURSE_HOME/checkpoints, else "
                        "~/.cache/ftcourse/checkpoints); to regenerate a shipped one, as a maintainer: "
                        "--source lab --out ftcourse/checkpoints/lab.pt")
    p.add_argument("--device", default=None)
    p.set_defaults(run=pretrain)
    p = command("exercises", "generate exercises/ from solutions/ (or --check that they agree)",
                "Each solution notebook's answers between ### BEGIN SOLUTION and ### END SOLUTION become a stub that "
                "raises NotImplementedError; the rest of the notebook is copied.")
    p.add_argument("--check", action="store_true", help="fail if exercises/ differs from what solutions/ gives")
    p.add_argument("--root", default=".", help="the course folder holding solutions/ and exercises/")
    p.set_defaults(run=exercises)
    p = command("grade", "run submitted exercise notebooks and write a grade table",
                "Each submission runs in its own sandbox; the grader asks its functions its own questions and judges "
                "the answers outside. One row per student and assignment, written as each finishes (see the "
                "README's section on grading for a teacher's whole workflow).")
    p.add_argument("submissions", help="a folder with NAME.ipynb or NAME/*.ipynb per student")
    p.add_argument("--out", default="grades.csv", help="the grade table (CSV), written row by row")
    p.add_argument("--timeout", type=int, default=600, help="seconds a whole notebook may run")
    p.add_argument("--cell-timeout", type=int, default=300, help="seconds a single cell may run")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows of an earlier run in --out whose notebooks have not changed")
    p.add_argument("--secret-file", default=None,
                   help="the course secret (made once with `ftcourse secret new FILE`): the same capstone every run")
    p.add_argument("--secret", type=int, default=None,
                   help="a secret given as a number (default: the --secret-file's, else a new one per table)")
    p.add_argument("--jobs", type=int, default=None,
                   help="submissions graded at once (default: the cores, as far as memory holds their sandboxes)")
    p.add_argument("--only", nargs="+", default=None, metavar="STUDENT",
                   help="grade these students again, keeping everyone else's rows in --out")
    p.add_argument("--weight", action="append", default=None, metavar="EXERCISE=POINTS",
                   help="points for an exercise (default 1), e.g. --weight 10.1=5; repeat for others")
    p.add_argument("--feedback", default=None, metavar="DIR",
                   help="write one Markdown file per student in DIR: each exercise's outcome and hint")
    p.add_argument("--sandbox", choices=["namespaces", "processes"], default=None,
                   help="the isolation (default: the strongest this machine offers; see the README)")
    p.add_argument("--container", choices=["docker", "podman"], default=None,
                   help="run each submission in a container of $FTCOURSE_CONTAINER_IMAGE (default ftcourse-grader)")
    p.set_defaults(run=grade)
    p = command("secret", "make the course secret, once per course (it fixes the capstone's test)",
                "The file (mode 0600) decides the capstone's target and test set and the exercises' questions; "
                "grade with --secret-file FILE so that every run sets the same test.")
    p.add_argument("action", choices=["new"], help="new: make a secret file")
    p.add_argument("path", help="where to keep it, e.g. course.secret (created with mode 0600)")
    p.add_argument("--replace", action="store_true", help="replace an existing secret (a new capstone test)")
    p.set_defaults(run=secret)
    p = command("canvas", "turn a grade table into a Canvas gradebook import",
                "Reads the gradebook exported from Canvas (Grades > Export) as the roster and writes a CSV that "
                "Canvas imports, one column per assignment.")
    p.add_argument("grades", help="the grade table written by ftcourse grade")
    p.add_argument("--roster", required=True, help="the gradebook exported from Canvas (Grades > Export)")
    p.add_argument("--out", default="canvas-import.csv", help="the CSV to import in Canvas")
    p.add_argument("--match", default="SIS Login ID",
                   help="the roster's column that holds the names of the submissions (default: SIS Login ID)")
    p.set_defaults(run=canvas)
    p = command("autograder", "build a Gradescope autograder zip for one assignment",
                "The zip follows Gradescope's autograder contract (setup.sh and run_autograder) and grades each "
                "submission with this grader, writing one test per exercise. It holds the course secret.")
    p.add_argument("assignment", help="the assignment it grades, e.g. 02 (10: the capstone)")
    p.add_argument("--secret-file", required=True, help="the course secret (it goes into the zip: keep the zip private)")
    p.add_argument("--out", default=None, help="the zip to write (default: ftcourse-autograder-ASSIGNMENT.zip)")
    p.add_argument("--weight", action="append", default=None, metavar="EXERCISE=POINTS",
                   help="points for an exercise (default 1), as for grade")
    p.add_argument("--visibility", default="visible",
                   choices=["visible", "hidden", "after_due_date", "after_published"],
                   help="when students see each exercise's result on Gradescope (default: visible)")
    p.add_argument("--wheel", default=None,
                   help="an ftcourse wheel to install (default: built from this ftcourse's source tree)")
    p.set_defaults(run=autograder)
    p = command("site", "build the course's website: every lesson executed, with its outputs",
                "Runs every lesson and exercise notebook and renders them with Jupyter Book, with the library's API "
                "from its docstrings.")
    p.add_argument("--profile", choices=["quick", "cpu", "gpu"], default="cpu",
                   help="the size the lessons run at: cpu (the default: what a learner on a laptop sees), quick (a "
                        "smoke test: every page carries a banner saying its numbers prove nothing) or gpu")
    p.add_argument("--out", default="build/site", help="the build folder; the HTML lands in OUT/_build/html")
    p.add_argument("--root", default=".", help="the course folder holding notebooks/ and exercises/")
    p.add_argument("--jobs", type=int, default=2,
                   help="lessons run at once, one thread each (default 2, for two cores; 1: one kernel on "
                        "torch's own thread count)")
    p.add_argument("--only", nargs="+", default=None, metavar="LESSON",
                   help="build only these lessons (e.g. 00_start_here), for a quick look at a page")
    p.set_defaults(run=site)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
