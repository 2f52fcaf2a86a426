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
- ``ftcourse site [--profile cpu] [--out build/site]``: the course as a website, every lesson with its outputs.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path


def check(args) -> int:
    import numpy
    import torch
    import torchvision

    from . import __version__
    from .env import setup
    from .models import resnet
    from .train import evaluate, fit

    print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"numpy {numpy.__version__}, ftcourse {__version__}")
    env = setup(seed=0, profile=args.profile)
    if env.device.type == "cuda":
        props = torch.cuda.get_device_properties(env.device)
        print(f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
              f"{props.major}.{props.minor}")
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
    print(f"smoke test: 2 epochs in {time.perf_counter() - start:.1f} s, {history.images_per_second:,.0f} images/s, "
          f"loss {history.train_loss[0]:.3f} -> {history.train_loss[-1]:.3f}, accuracy {accuracy:.2f}")
    ok = history.train_loss[-1] < history.train_loss[0] and history.diverged is None
    print("OK: the training loop works on this machine." if ok else "PROBLEM: the loss did not fall.")
    return 0 if ok else 1


def tour(args) -> int:
    from .tour import run_tour

    run_tour(profile=args.profile, out=args.out)
    return 0


def pretrain(args) -> int:
    from .env import pick_device
    from .pretrain import RECIPES, pretrain as run_recipe, quick_version, save_checkpoint, user_checkpoint_dir

    names = [*RECIPES, "text"] if args.source == "all" else [args.source]
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
        print(f"source test accuracy {info['source_test_accuracy']:.3f}, {info['seconds']:.0f} s; "
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


def build_parser() -> argparse.ArgumentParser:
    from .models import SHIPPED  # the names of the shipped checkpoints, listed once there

    parser = argparse.ArgumentParser(prog="ftcourse", description="Fine-tuning and transferability, hands on.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="versions, device, and a 5-second training smoke test")
    p.add_argument("--profile", choices=["quick", "cpu", "gpu"], default=None)
    p.set_defaults(run=check)
    p = sub.add_parser("tour", help="the main job: scratch vs probe vs fine-tune on two lab targets")
    p.add_argument("--profile", choices=["quick", "cpu", "gpu"], default=None)
    p.add_argument("--out", default="ftcourse-tour.png", help="where to write the figure")
    p.set_defaults(run=tour)
    about = ("make the shipped lab checkpoints again from their recipes, in your cache folder (the package's own "
             "files change only when --out names them)")
    p = sub.add_parser("pretrain", help=about, description=about)
    p.add_argument("--source", default="lab", choices=[*SHIPPED, "text", "all"],
                   help="which checkpoint (default: lab, the main one; text: the text lab's BERT, a folder; "
                        "all: every one)")
    p.add_argument("--quick", action="store_true", help="a miniature of the recipe (seconds), for tests")
    p.add_argument("--out", default=None,
                   help="the file to write (default: NAME.pt in $FTCOURSE_HOME/checkpoints, else "
                        "~/.cache/ftcourse/checkpoints); to regenerate a shipped one, as a maintainer: "
                        "--source lab --out ftcourse/checkpoints/lab.pt")
    p.add_argument("--device", default=None)
    p.set_defaults(run=pretrain)
    p = sub.add_parser("exercises", help="generate exercises/ from solutions/ (or --check that they agree)")
    p.add_argument("--check", action="store_true", help="fail if exercises/ differs from what solutions/ gives")
    p.add_argument("--root", default=".", help="the course folder holding solutions/ and exercises/")
    p.set_defaults(run=exercises)
    p = sub.add_parser("grade", help="run submitted exercise notebooks and write a grade table")
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
    p = sub.add_parser("secret", help="make the course secret, once per course (it fixes the capstone's test)")
    p.add_argument("action", choices=["new"], help="new: make a secret file")
    p.add_argument("path", help="where to keep it, e.g. course.secret (created with mode 0600)")
    p.add_argument("--replace", action="store_true", help="replace an existing secret (a new capstone test)")
    p.set_defaults(run=secret)
    p = sub.add_parser("canvas", help="turn a grade table into a Canvas gradebook import")
    p.add_argument("grades", help="the grade table written by ftcourse grade")
    p.add_argument("--roster", required=True, help="the gradebook exported from Canvas (Grades > Export)")
    p.add_argument("--out", default="canvas-import.csv", help="the CSV to import in Canvas")
    p.add_argument("--match", default="SIS Login ID",
                   help="the roster's column that holds the names of the submissions (default: SIS Login ID)")
    p.set_defaults(run=canvas)
    p = sub.add_parser("site", help="build the course's website: every lesson executed, with its outputs")
    p.add_argument("--profile", choices=["quick", "cpu", "gpu"], default="cpu",
                   help="the size the lessons run at (default cpu: what a learner on a laptop sees)")
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
