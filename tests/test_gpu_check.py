"""benchmarks/gpu_check.sh: every stage runs and is named in the summary, a failed stage does not stop the others.

On the CPU the script runs in its --cpu-smoke mode (tiny sizes, the CUDA tests skipped); on a GPU it is run by hand.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
STAGES = ("cuda tests", "bench_fit", "bench_lab", "lesson 00_start_here")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_check(folder, **env):
    environment = {k: v for k, v in os.environ.items() if k != "OUT"} | env
    return subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", str(folder)], env=environment, capture_output=True,
                          text=True, timeout=600)


def stage_lines(summary: str) -> dict[str, str]:
    return {stage: line for line in summary.splitlines() for stage in STAGES if line.startswith(stage + " ")}


@pytest.mark.slow  # runs the benchmarks, the CUDA test collection and a lesson: about a minute
def test_cpu_smoke_runs_every_stage_and_writes_the_summary(tmp_path):
    result = run_check(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text()
    lines = stage_lines(summary)
    assert set(lines) == set(STAGES), summary
    assert all(" ok " in line for line in lines.values()), summary
    assert "skipped" in lines["cuda tests"] and "fit (default) / naive" in lines["bench_fit"], summary
    assert "median img/s: source" in lines["bench_lab"], summary
    for log in ("cuda_tests.log", "bench_fit.log", "bench_lab.log", "lesson_00_start_here.log",
                "notebooks/00_start_here.ipynb"):
        assert (tmp_path / log).is_file(), log


def test_a_failing_stage_is_recorded_the_others_still_run_and_the_exit_code_says_so(tmp_path):
    result = run_check(tmp_path, PYTHON="false")  # every stage's command fails at once
    assert result.returncode == 1
    lines = stage_lines((tmp_path / "summary.txt").read_text())
    assert set(lines) == set(STAGES) and all("FAILED" in line for line in lines.values()), lines


def test_lessons_that_no_longer_fit_the_budget_are_skipped_and_listed(tmp_path):
    result = run_check(tmp_path, PYTHON="true", GPU_CHECK_BUDGET="5")
    summary = (tmp_path / "summary.txt").read_text()
    assert result.returncode == 0
    assert "skipped" in stage_lines(summary)["lesson 00_start_here"]
    assert "Skipped for lack of time: 00_start_here" in summary
