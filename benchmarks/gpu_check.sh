#!/usr/bin/env bash
# The GPU check (issue 22) in one command: on a CUDA machine it installs latent-vg without dependencies
# into a temporary target and runs, each step under its own time limit and all of them inside DEADLINE_S:
#
#   install  pip install --no-deps --no-build-isolation --no-index --target TMP (PYTHONPATH=the tree if it fails)
#   pytest   pytest tests/kernels tests/modeling -m "gpu or not slow" on CUDA (fp32/fp16/bf16 Triton kernels,
#            torch.compile of the model with the Triton VCI inside it)
#   vci      bench_vci.py at batch 1/8/64, fp16: Triton vs the eager reference vs the bandwidth floor
#   train    bench_train_step.py: one lvg-b training step at batch 16 in bf16 (samples/s, peak memory)
#   e2e      bench_e2e.py, lvg-b at batch 1/64/8: eager fp32, bf16 and fp16 (Triton VCI on and off),
#            torch.compile alone and with CUDA graphs (bf16, batches 1 and 64), each case's forward rate
#            as a share of a bf16 matmul probe run in its own process
#
# Usage:  OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh     (OUT defaults to $TMPDIR/lvg_gpu_check)
#         STEPS="vci e2e" ...     run only these steps (default: install pytest vci train e2e)
#         DEADLINE_S=470 ...      seconds for the whole script (default 470: under 8 minutes)
#         PYTHON=python3 ...      the interpreter (default python3)
# Without a usable CUDA device every GPU step is recorded as skipped with the reason, and the script still
# exits 0: that dry run checks the script itself. Writes OUT/gpu_check.json (environment, each step's status,
# time and summary, the targets), OUT/gpu_check.log (every step's output) and OUT/results/*_cuda.json
# (+ e2e_cuda.md and the latency plot): at most 8 files. Prints a short table last.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-${TMPDIR:-/tmp}/lvg_gpu_check}"
PY="${PYTHON:-python3}"
STEPS="${STEPS:-install pytest vci train e2e}"
DEADLINE_S="${DEADLINE_S:-470}"
SUMMARY_RESERVE_S=15
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lvg-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT/results"
# The summary reads what this run wrote, never an earlier run's files.
rm -f "$OUT/gpu_check.json" "$OUT"/results/{bench_vci,train_step,e2e}_cuda.json "$OUT/results/e2e_cuda.md" \
    "$OUT"/results/latency_vs_batch{,_cuda}.png
LOG="$OUT/gpu_check.log"
: >"$LOG"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

helper() { "$PY" "$ROOT/benchmarks/_gpu_check.py" --out "$OUT" "$@"; }
say() { echo "[gpu_check $(printf '%3d' "$SECONDS")s] $*"; }
selected() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# limit_for MAX_SECONDS: MAX_SECONDS, or what the deadline leaves if that is less.
limit_for() {
    local left=$((DEADLINE_S - SUMMARY_RESERVE_S - SECONDS))
    echo $(($1 < left ? $1 : left))
}

# step NAME MAX_SECONDS NEEDS_GPU(0|1) COMMAND...: run COMMAND under limit_for MAX_SECONDS, its output
# appended to the log, and record the outcome (and the command, also when it is skipped).
step() {
    local name=$1 max=$2 gpu=$3
    shift 3
    LAST_STATUS=skipped
    if ! selected "$name"; then
        helper record "$name" skipped 0 --reason "not selected (STEPS=$STEPS)" -- "$@"
        return 0
    fi
    if [ "$gpu" = 1 ] && [ -n "$SKIP_REASON" ]; then
        helper record "$name" skipped 0 --reason "$SKIP_REASON" -- "$@"
        say "$name: skipped: $SKIP_REASON"
        return 0
    fi
    local limit
    limit=$(limit_for "$max")
    if [ "$limit" -lt 20 ]; then
        helper record "$name" skipped 0 --reason "no time left before the ${DEADLINE_S} s deadline" -- "$@"
        say "$name: skipped: no time left"
        return 0
    fi
    local offset t0=$SECONDS rc status=ok
    offset=$(wc -c <"$LOG")
    say "$name: running (limit ${limit} s)"
    echo "===== $name (limit ${limit} s): $*" >>"$LOG"
    timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; elif [ "$rc" != 0 ]; then status=failed; fi
    LAST_STATUS=$status
    helper record "$name" "$status" $((SECONDS - t0)) --rc "$rc" --limit "$limit" --log "$LOG" --offset "$offset" \
        -- "$@"
    say "$name: $status (exit $rc) after $((SECONDS - t0)) s"
}

install_package() {
    # Only what the build reads (pyproject.toml, README.md, lvg/), so the build leaves the tree untouched.
    mkdir -p "$WORK/src" && cp -r pyproject.toml README.md lvg "$WORK/src/" &&
        "$PY" -m pip install --no-deps --no-build-isolation --no-index --no-cache-dir --no-compile \
            --disable-pip-version-check -q --target "$WORK/site" "$WORK/src" &&
        (cd "$WORK" && PYTHONPATH="$WORK/site" "$PY" -c "import lvg, pathlib; p = pathlib.Path(lvg.__file__).parent; \
assert p.is_relative_to('$WORK'), f'imported {p}'; assert (p / 'assets').is_dir(), 'no assets'; \
print('installed', lvg.__version__, 'at', p)")
}

export -f install_package
export PY WORK OUT

say "writing to $OUT (deadline ${DEADLINE_S} s; steps: $STEPS)"
SKIP_REASON="$(helper env)" || SKIP_REASON="the environment probe failed (see $OUT/gpu_check.json)"
say "device: ${SKIP_REASON:-CUDA available}"

step install 60 0 bash -c install_package
if [ "$LAST_STATUS" = ok ]; then
    export PYTHONPATH="$WORK/site"
    say "running the installed copy (PYTHONPATH=$PYTHONPATH)"
else
    say "running from the tree (PYTHONPATH=$PYTHONPATH)"
fi
step pytest 130 1 "$PY" -m pytest tests/kernels tests/modeling -m "gpu or not slow" -q -p no:cacheprovider
step vci 60 1 "$PY" benchmarks/bench_vci.py --batches 1 8 64 --no-compile --name cuda --out "$OUT/results"
step train 60 1 "$PY" benchmarks/bench_train_step.py --variant lvg-b --batch 16 --amp bf16 --steps 10 \
    --warmup 3 --device cuda --name cuda --out "$OUT/results"
# The e2e step gets what is left; it starts no batch in its last minute (the JSON is rewritten after every
# batch, so a stop at the limit keeps what was measured).
E2E_LIMIT=$(limit_for 420)
step e2e 420 1 "$PY" benchmarks/bench_e2e.py --device cuda --variant lvg-b --batches 1,64,8 \
    --compile-batches 1,64 --backends eager,compile --models lvg --precisions bf16,fp16 --reps 20 \
    --reps-large 10 --warmup 3 --parallel-setup --budget-s $((E2E_LIMIT > 120 ? E2E_LIMIT - 60 : E2E_LIMIT / 2)) \
    --verbose --out "$OUT/results" --cache "$WORK/e2e-cache"
rm -f "$OUT/results/latency_vs_batch.png"  # the same plot as latency_vs_batch_cuda.png: one file fewer to fetch

helper summary || say "the summary failed (see $OUT/gpu_check.json)"
exit 0
