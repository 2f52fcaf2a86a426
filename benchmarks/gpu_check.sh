#!/usr/bin/env bash
# Everything that needs a GPU, in one run of at most 8 minutes on a machine with one NVIDIA GPU:
#   1. the CUDA tests            python3 -m pytest tests -m cuda
#   2. fit against the naive loop python3 benchmarks/bench_fit.py --gpu-model  (targets on an H200: >= 6x, >= 25% MFU)
#   3. the lab's rendering speed  python3 benchmarks/bench_lab.py --device cuda
#   4. each lesson notebook, executed top to bottom in the gpu profile, timed, until the time left runs out
#
#   benchmarks/gpu_check.sh [--cpu-smoke] [FOLDER]
#
# Every log and summary.txt (each stage: exit code, seconds, the key figures from its log) go to $OUT if it is set,
# else to FOLDER, else to ./gpu-check-<unix time>. Each stage has a time budget and runs under `timeout`, so one
# that hangs costs only its own budget; the lessons share what is left, and those that no longer fit are skipped
# and listed as skipped. A failed stage is recorded and the next one runs; the exit code is 1 if any stage failed.
#
# --cpu-smoke (or GPU_CHECK_SMOKE=1): the same stages on the CPU at tiny sizes, to test this script without a GPU:
# the CUDA tests are collected and skipped, bench_fit trains 1,024 images, bench_lab renders 50 images per class,
# and only notebooks/00_start_here.ipynb runs, in the quick profile.
#
# GPU_CHECK_BUDGET (seconds, default 470) is the whole run's budget; PYTHON (default python3) the interpreter.

set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=${GPU_CHECK_SMOKE:-0}
FOLDER=
for arg in "$@"; do
    case $arg in
        --cpu-smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        -*) echo "gpu_check.sh: unknown option $arg (use --cpu-smoke, or a folder for the logs)" >&2; exit 2 ;;
        *) FOLDER=$arg ;;
    esac
done
DIR=${OUT:-${FOLDER:-gpu-check-$(date +%s)}}
mkdir -p "$DIR" || exit 2
DIR=$(cd "$DIR" && pwd)
SUMMARY=$DIR/summary.txt
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # ftcourse from this checkout, installed or not
export MPLBACKEND=Agg

START=$SECONDS
DEADLINE=$((START + ${GPU_CHECK_BUDGET:-470}))
FAILED=0

if [ "$SMOKE" = 1 ]; then
    MODE="cpu smoke (tiny sizes, CPU)"
    export CUDA_VISIBLE_DEVICES=""  # the CPU even where a GPU is present
    PROFILE=quick
    FIT_ARGS=(--images 1024 --epochs 1 --workers 0 --fp32-only)
    LAB_ARGS=(--device cpu --per-class 50 --repeats 1)
    LESSONS=(notebooks/00_start_here.ipynb)
    BUDGET_TESTS=120 BUDGET_FIT=120 BUDGET_LAB=60
else
    MODE="gpu"
    PROFILE=gpu
    FIT_ARGS=(--gpu-model)
    LAB_ARGS=(--device cuda)
    LESSONS=(notebooks/*.ipynb)
    BUDGET_TESTS=90 BUDGET_FIT=150 BUDGET_LAB=40
fi
MIN_LESSON=20  # seconds: a lesson given less than this is skipped rather than started

left() { local t=$((DEADLINE - SECONDS)); echo $((t > 1 ? t : 1)); }
smaller() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

# record NAME EXIT SECONDS FIGURES: one line of the summary.
record() {
    local status=ok
    if [ "$2" = skipped ]; then status=skipped
    elif [ "$2" = 124 ] || [ "$2" = 137 ]; then status="TIMED OUT"; FAILED=1
    elif [ "$2" != 0 ]; then status=FAILED; FAILED=1
    fi
    printf '%-24s %-10s exit %-8s %5ss  %s\n' "$1" "$status" "$2" "$3" "$4" | tee -a "$SUMMARY"
}

# run NAME BUDGET LOG COMMAND...: the command under `timeout`, its output in LOG; sets RC and TOOK.
run() {
    local name=$1 budget=$2 log=$3 began=$SECONDS
    shift 3
    echo "== $name (budget ${budget}s): $*" | tee "$log"
    timeout --kill-after=10 "$budget" "$@" >>"$log" 2>&1
    RC=$?
    TOOK=$((SECONDS - began))
}

{
    echo "gpu_check.sh: $MODE, $(date -u '+%Y-%m-%d %H:%M UTC'), budget ${GPU_CHECK_BUDGET:-470}s"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' + changes')"
    "$PYTHON" -c "import torch; print('torch', torch.__version__, '| device:',
        torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU')" 2>&1
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo
} | tee "$SUMMARY"

# 1. The CUDA tests (collected and skipped without a GPU).
run "cuda tests" "$(smaller $BUDGET_TESTS "$(left)")" "$DIR/cuda_tests.log" \
    "$PYTHON" -m pytest tests -m cuda -q -p no:cacheprovider
record "cuda tests" $RC $TOOK "$(grep -E '[0-9]+ (passed|failed|skipped|error|deselected)' "$DIR/cuda_tests.log" | tail -1)"

# 2. fit against the naive tutorial loop.
run "bench_fit" "$(smaller $BUDGET_FIT "$(left)")" "$DIR/bench_fit.log" \
    "$PYTHON" benchmarks/bench_fit.py "${FIT_ARGS[@]}"
figures="${FIT_ARGS[*]}; $(grep -E '^fit \(default\) / naive|MFU of fit' "$DIR/bench_fit.log" | paste -sd ';')"
[ "$SMOKE" = 1 ] || figures="$figures (targets: >= 6x, MFU >= 25% on an H200)"
record "bench_fit" $RC $TOOK "$figures"

# 3. The lab's rendering speed: the median images/s of each task.
run "bench_lab" "$(smaller $BUDGET_LAB "$(left)")" "$DIR/bench_lab.log" \
    "$PYTHON" benchmarks/bench_lab.py "${LAB_ARGS[@]}"
figures=$(awk '/^device/ {sub(/^device /, ""); d=$0} /^[a-z]+ +[0-9]+ +[0-9,]+ +[0-9,]+$/ {t=t $1 " " $3 ", "}
               END {sub(/, $/, "", t); print d "; median img/s: " t}' "$DIR/bench_lab.log")
record "bench_lab" $RC $TOOK "${LAB_ARGS[*]}; $figures"

# 4. The lessons, in order, each with the time that is left.
mkdir -p "$DIR/notebooks"
skipped=()
for notebook in "${LESSONS[@]}"; do
    name=$(basename "$notebook" .ipynb)
    budget=$(left)
    if [ "$budget" -lt "$MIN_LESSON" ]; then
        skipped+=("$name")
        record "lesson $name" skipped 0 "not started: ${budget}s of the budget left"
        continue
    fi
    run "lesson $name" "$budget" "$DIR/lesson_$name.log" env FTCOURSE_PROFILE=$PROFILE \
        "$PYTHON" -m nbconvert --to notebook --execute --ExecutePreprocessor.timeout=-1 \
        --output-dir "$DIR/notebooks" "$notebook"
    if [ $RC = 0 ]; then
        figures="profile $PROFILE"
    else
        figures="profile $PROFILE; $(grep -E '^[A-Za-z]*(Error|Exception)\b' "$DIR/lesson_$name.log" | tail -1 | cut -c1-160)"
    fi
    record "lesson $name" $RC $TOOK "$figures"
done

{
    echo
    [ ${#skipped[@]} -gt 0 ] && echo "Skipped for lack of time: ${skipped[*]} (raise GPU_CHECK_BUDGET to run them)."
    echo "Total $((SECONDS - START))s of ${GPU_CHECK_BUDGET:-470}s. $([ $FAILED = 0 ] && echo 'Every stage passed.' || echo 'Some stage FAILED: see its log.')"
    echo "Logs in $DIR"
} | tee -a "$SUMMARY"
exit $FAILED
