#!/usr/bin/env bash
# The real runs of RESULTS.md §9-§11 in one go on a lent GPU machine that has no network.
#
#   BUDGET=540 bash scripts/gpu_run.sh        # on the GPU machine, from the repository root
#
# It installs the carried wheels (.whl/: mlflow-skinny, optuna, datasets and what they need beyond the
# machine's own PyTorch stack), unpacks the carried IMDB copy (.gpu_data/imdb.tar.xz) to
# ../shared/data/imdb, and runs every stage with the project's own CLI against a local SQLite tracking
# store ($TR, default .gpu_tracking in the repository; artifact paths in it are absolute, so unpack the
# store it returns at the same path on the development machine, or set TR to a path both machines share). Stages run in priority order, each under what is left of BUDGET seconds; after
# each, the store (without the per-run student weights, too big to bring back) is packed into $OUT.
# Every knob is an environment variable so the same script runs a tiny version on a CPU,
# or a slice of the real runs on a CPU machine (venv active), e.g. CNN-256's transfer set and teacher arms:
#
#   INSTALL_WHEELS=0 KD_IMDB_DEVICE=cpu STAGES="labels linear ensemble arms" ARMS_GRID=cnn:256 ARMS=scratch,kd_transfer \
#     ARMS_SEEDS=3 WORKERS=3 BUDGET=10000 OUT=.cpu_out bash scripts/gpu_run.sh
set -u
START=$(date +%s)
BUDGET=${BUDGET:-540}
OUT=${OUT:-$PWD/.gpu_out}
DATA=${DATA:-../shared/data/imdb}
TR=${TR:-$PWD/.gpu_tracking}
GRID=${GRID:-"gru:16,32,64,128,256;cnn:64,128,256"}
SEEDS=${SEEDS:-5}
WORKERS=${WORKERS:-8}
TRIALS=${TRIALS:-24}
SWEEP_WORKERS=${SWEEP_WORKERS:-6}
EPOCHS=${EPOCHS:-0}  # 0 = the origin's 4 (GRU) / 3 (CNN)
CONFIRM_SEEDS=${CONFIRM_SEEDS:-5}
ARMS_SEEDS=${ARMS_SEEDS:-3}
ARMS_GRID=${ARMS_GRID:-"gru:32,256;cnn:256"}
ARMS=${ARMS:-"scratch,kd,label_smoothing,shuffled,kd_mse,kd_transfer"}  # kd@linear,kd@ensemble join when those teachers exist
STAGES=${STAGES:-"labels linear study sweep_gru sweep_cnn confirm_gru confirm_cnn ensemble arms"}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 KD_IMDB_DEVICE=${KD_IMDB_DEVICE:-auto}
mkdir -p "$OUT" "$TR"
exec > >(tee -a "$OUT/gpu_run.log") 2>&1

left() { echo $((BUDGET - ($(date +%s) - START))); }

if [ -d .whl ] && [ "${INSTALL_WHEELS:-1}" = 1 ]; then
    SITE=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
    export PYTHONPATH=$SITE:$PWD
fi
if [ "$DATA" = ../shared/data/imdb ] && [ ! -f "$DATA/train.parquet" ]; then
    mkdir -p "$DATA" && tar xJf .gpu_data/imdb.tar.xz -C "$DATA" || exit 1
fi
KD="python3 -m kd_imdb.cli"
export MLFLOW_TRACKING_URI="sqlite:///$TR/mlflow.db" MLFLOW_EXPERIMENT_NAME=kd_imdb-gpu
nvidia-smi -L 2>/dev/null
python3 - <<EOF || exit 1
import mlflow, optuna, datasets, sklearn, scipy, matplotlib, tokenizers, safetensors, torch  # fail early
import mlflow.pyfunc, mlflow.store.tracking.sqlalchemy_store
import kd_imdb.cli, kd_imdb.study, kd_imdb.sweep, kd_imdb.executor, kd_imdb.ledger, kd_imdb.analysis, kd_imdb.serving, kd_imdb.linear_teacher, kd_imdb.ensemble
from kd_imdb.train import resolve_device
print("torch", torch.__version__, "mlflow", mlflow.__version__, "device", resolve_device(), flush=True)
if mlflow.get_experiment_by_name("kd_imdb-gpu") is None:
    mlflow.create_experiment("kd_imdb-gpu", artifact_location="$TR/artifacts")
EOF

pack() {  # the store without each run's student/ (weights, predictions; the registered models keep theirs)
    local db
    for db in mlflow optuna; do  # a consistent copy even while a background job writes, gzipped
        [ -f "$TR/$db.db" ] || continue
        python3 -c "import sqlite3; s = sqlite3.connect('$TR/$db.db'); d = sqlite3.connect('$OUT/$db.db'); s.backup(d); d.close()"
        gzip -1 -f "$OUT/$db.db"
    done
    rm -f "$OUT"/artifacts.tgz.part-*
    tar czf - -C "$TR" --anchored --exclude='artifacts/????????????????????????????????/artifacts/student' artifacts \
        | split -b 15M - "$OUT/artifacts.tgz.part-"
    echo "packed at $(( $(date +%s) - START )) s: $(ls "$OUT" | tr '\n' ' ')"
}

stage() {  # stage NAME COMMAND...: run under the time that is left, then pack
    local name=$1 budget; shift
    case " $STAGES " in *" $name "*) ;; *) echo "=== $name: not selected"; return 0 ;; esac
    budget=$(left)
    if [ "$budget" -lt 40 ]; then echo "=== $name: skipped, $budget s left"; return 0; fi
    echo "=== $name at $(( $(date +%s) - START )) s ($budget s left): $*"
    local t0=$(date +%s)
    timeout --kill-after=5 "$budget" "$@" 2>&1 | grep --line-buffered -v "^\s*$" | tee "$TR/$name.out"
    echo "=== $name rc=${PIPESTATUS[0]} wall_s=$(( $(date +%s) - t0 ))"
    pack
}
run_id() { sed -n "s/.*$1 run: \([0-9a-f]\{32\}\).*/\1/p" "$TR/$2.out" 2>/dev/null | tail -1; }  # empty if the stage did not run

stage labels $KD soft-labels --logits-file results/teacher_logits.parquet --data "$DATA" --unsupervised true
LABELS=$(run_id "soft labels" labels)
[ -n "$LABELS" ] || { echo "no soft labels run"; exit 1; }
echo "soft labels: $LABELS"

# Issue 5's linear teacher needs only CPU: it runs beside the GPU stages, on the cores they leave idle.
case " $STAGES " in *" linear "*)
    (timeout --kill-after=5 "$(left)" $KD linear-teacher --data "$DATA" --unsupervised true > "$TR/linear.out" 2>&1) &
    LINEAR_PID=$! ;;
*) LINEAR_PID= ;; esac

# Issue 3: the default grid, paired seeds.
stage study $KD study --soft-labels-run-id "$LABELS" --data "$DATA" --grid "$GRID" --seeds "$SEEDS" --workers "$WORKERS" --epochs "$EPOCHS"
# Issue 4: sweep T for GRU-32 and CNN-64, then confirm each winner on 5 fresh seed pairs.
stage sweep_gru $KD sweep --soft-labels-run-id "$LABELS" --data "$DATA" --arch gru --hidden 32 --n-trials "$TRIALS" --epochs "$EPOCHS" \
    --workers "$SWEEP_WORKERS" --storage "sqlite:///$TR/optuna.db"
stage sweep_cnn $KD sweep --soft-labels-run-id "$LABELS" --data "$DATA" --arch cnn --hidden 64 --n-trials "$TRIALS" --epochs "$EPOCHS" \
    --workers "$SWEEP_WORKERS" --storage "sqlite:///$TR/optuna.db"
SWEEP_GRU=$(run_id "sweep" sweep_gru); SWEEP_CNN=$(run_id "sweep" sweep_cnn)
[ -n "$SWEEP_GRU" ] && stage confirm_gru $KD confirm --sweep-run-id "$SWEEP_GRU" --seeds "$CONFIRM_SEEDS" --workers "$WORKERS"
[ -n "$SWEEP_CNN" ] && stage confirm_cnn $KD confirm --sweep-run-id "$SWEEP_CNN" --seeds "$CONFIRM_SEEDS" --workers "$WORKERS"
# Issue 5: control arms, the transfer set and the linear and ensemble teachers (arms kd@linear and
# kd@ensemble), all in one study so that every arm shares one scratch arm.
[ -n "$LINEAR_PID" ] && { wait "$LINEAR_PID"; echo "=== linear: $(tail -1 "$TR/linear.out")"; pack; }
LINEAR=$(run_id "soft labels" linear)
[ -n "$LINEAR" ] && stage ensemble $KD ensemble-labels --runs "$LABELS,$LINEAR" --data "$DATA" --unsupervised true
ENSEMBLE=$(run_id "soft labels" ensemble)
TEACHERS=$(echo "${LINEAR:+linear=$LINEAR},${ENSEMBLE:+ensemble=$ENSEMBLE}" | sed 's/^,//; s/,$//')
TEACHER_ARMS="${LINEAR:+,kd@linear}${ENSEMBLE:+,kd@ensemble}"
stage arms $KD study --soft-labels-run-id "$LABELS" --data "$DATA" --grid "$ARMS_GRID" --seeds "$ARMS_SEEDS" --workers "$WORKERS" --epochs "$EPOCHS" \
    --arms "$ARMS$TEACHER_ARMS" --teachers "$TEACHERS" --register false
echo "done at $(( $(date +%s) - START )) s"
