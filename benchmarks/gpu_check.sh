#!/usr/bin/env bash
# One prepared GPU check of medvision: under 8 minutes on one H100/H200, then ONE table.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the checkout's root
#   bash benchmarks/gpu_check.sh --cpu      # a dry run of every step at minimal size on a CPU
#
# Steps, each under its own time limit (none starts after 7.5 minutes): pytest -m gpu;
# throughput.py (ResNet-50 and U-Net, bf16-mixed, channels_last, medvision vs plain, memory
# batches and the cached lung loader); step_overhead.py; data_path.py; one short fit per task
# with configs/trainer/gpu_amp.yaml on the real data; then gpu_check_table.py prints the table.
# docs/performance.md ("GPU check") describes each step.
#
# Environment (all optional): WHEELS, a folder of wheels installed first with
# `pip install --no-index --no-deps --target $SITE` (default .whl/, skipped when absent; the
# list and its `pip download` command: benchmarks/gpu_wheels.txt); DATA, the real data folders
# (default ../shared/data); WORK, where logs, runs and the table go (default: a new folder
# under /tmp); PYTHON, the interpreter (default python3). The first argument that is not
# --cpu, if any, is the wheels folder.
#
# Exit status: 0 when every row of the table passes, 1 otherwise.

set -uo pipefail

CPU=0
for arg in "$@"; do
    case "$arg" in
        --cpu) CPU=1 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {print}' "$0"; exit 0 ;;
        *) WHEELS="$arg" ;;
    esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
WHEELS="${WHEELS:-.whl}"
DATA="${DATA:-../shared/data}"
WORK="${WORK:-$(mktemp -d /tmp/medvision_gpu_check.XXXXXX)}"
PYTHON="${PYTHON:-python3}"
SITE="${SITE:-$WORK/site}"
BUDGET_S=450  # 7.5 minutes: no new step starts after this
START=$SECONDS
mkdir -p "$WORK"
export NO_ALBUMENTATIONS_UPDATE=1  # albumentations' version check needs the network

# --- setup: wheels and the checkout on the path ---------------------------------------------
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    echo "Installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "No wheels in $WHEELS/: using the packages installed for $PYTHON"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" -c "import medvision.cli, segmentation_models_pytorch, albumentations, jsonargparse" \
    || { echo "medvision cannot be imported with PYTHONPATH=$PYTHONPATH: see above"; exit 1; }
if [ "$CPU" = 0 ]; then
    "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
        || { echo "No CUDA GPU visible to torch: run with --cpu for a dry run"; exit 1; }
fi
for task in lung_ct chest_xray nih_chestxray14; do
    [ -d "$DATA/$task" ] || { echo "No $DATA/$task: set DATA to the real data folders"; exit 1; }
done
echo "Work folder: $WORK"

# --- steps -------------------------------------------------------------------------------------
# run_step NAME LIMIT_S CMD...: runs CMD with its output in $WORK/NAME.log, records the outcome
run_step() {
    local name="$1" limit="$2"; shift 2
    local left=$((BUDGET_S - (SECONDS - START))) status rc=0 began=$SECONDS
    if [ "$left" -le 0 ]; then
        status=skipped
    else
        [ "$limit" -gt "$left" ] && limit=$left
        echo "[$((SECONDS - START)) s] $name (at most $limit s)"
        timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
        rc=$?
        status=ran
        [ "$rc" = 124 ] || [ "$rc" = 137 ] && status=timeout
    fi
    printf '{"step": "%s", "rc": %d, "seconds": %d, "status": "%s", "log": "%s"}\n' \
        "$name" "$rc" "$((SECONDS - began))" "$status" "$WORK/$name.log" >> "$WORK/steps.jsonl"
}

# fit_step NAME CONFIG DATA_FOLDER EPOCHS EXTRA...: a short fit, GPU-Util sampled meanwhile
fit_step() {
    local name="$1" config="$2" folder="$3" epochs="$4"; shift 4
    local out="$WORK/$name" sampler=""
    mkdir -p "$out"
    if [ "$CPU" = 0 ] && command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 \
            -i "${CUDA_VISIBLE_DEVICES%%,*}" > "$out/util.csv" 2>/dev/null &
        sampler=$!
    fi
    run_step "$name" "$FIT_LIMIT" "$PYTHON" -m medvision.cli fit --config "$config" "${SIZE[@]}" \
        --data.init_args.data_dir="$DATA/$folder" \
        --trainer.max_epochs="$epochs" \
        --model.init_args.lr_scheduler.init_args.T_max="$epochs" \
        --trainer.default_root_dir="$out" --trainer.logger.init_args.save_dir="$out" \
        --trainer.enable_progress_bar=false \
        --trainer.callbacks+=medvision.training.EpochTimer \
        --trainer.callbacks.output="$out/epoch_times.json" "$@"
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
}

if [ "$CPU" = 0 ]; then
    : "${CUDA_VISIBLE_DEVICES:=0}"
    THROUGHPUT=(--device cuda --precisions bf16-mixed --layouts channels_last --infer-steps 20
                --arm-timeout 100)
    OVERHEAD=(--device cuda --precision bf16-mixed --rounds 2 --arms medvision,bare,plain)
    DATA_PATH=(--workers 0,4,8 --pin-memory off,on --prefetch 2 --batch-size 64 --batches 10)
    SIZE=(--config configs/trainer/gpu_amp.yaml)
    FIT_LIMIT=100 PYTEST_LIMIT=150 THROUGHPUT_LIMIT=270 OVERHEAD_LIMIT=90 DATA_PATH_LIMIT=90
    EPOCHS_LUNG=3 EPOCHS_CHEST=2 EPOCHS_NIH=2
else
    THROUGHPUT=(--device cpu --precisions 32 --layouts nchw --image-size 32 --batch-size 2
                --warmup 0 --steps 1 --infer-steps 1 --num-workers 0 --slice-size 64)
    OVERHEAD=(--device cpu --rounds 1 --warmup 1 --steps 1 --batch-size 4 --image-size 16
              --arms medvision,bare,plain)
    DATA_PATH=(--workers 0 --pin-memory off --num-slices 20 --distinct 2 --slice-size 64
               --image-size 32 --samples 4 --repeats 1 --batch-size 4 --batches 1)
    SIZE=(--trainer.accelerator=cpu --data.init_args.image_size=32
          --data.init_args.num_workers=0 --trainer.limit_train_batches=2
          --trainer.limit_val_batches=2)
    FIT_LIMIT=120 PYTEST_LIMIT=120 THROUGHPUT_LIMIT=300 OVERHEAD_LIMIT=120 DATA_PATH_LIMIT=120
    EPOCHS_LUNG=1 EPOCHS_CHEST=1 EPOCHS_NIH=1
    touch "$WORK/cpu_mode"
fi

run_step pytest_gpu "$PYTEST_LIMIT" "$PYTHON" -m pytest -q -m gpu tests/test_gpu.py \
    tests/test_gpu_augmentation.py
run_step throughput "$THROUGHPUT_LIMIT" "$PYTHON" benchmarks/throughput.py "${THROUGHPUT[@]}" \
    --models resnet50,unet --loops medvision,plain --data memory,cached \
    --json "$WORK/throughput.json"
run_step step_overhead "$OVERHEAD_LIMIT" "$PYTHON" benchmarks/step_overhead.py "${OVERHEAD[@]}"
run_step data_path "$DATA_PATH_LIMIT" "$PYTHON" benchmarks/data_path.py "${DATA_PATH[@]}"
fit_step fit_lung configs/unet_lung.yaml lung_ct "$EPOCHS_LUNG"
fit_step fit_chest configs/resnet18_chestxray.yaml chest_xray "$EPOCHS_CHEST" \
    --data.init_args.test_split=val
fit_step fit_nih configs/resnet50_nih.yaml nih_chestxray14 "$EPOCHS_NIH"

echo "[$((SECONDS - START)) s] done; logs in $WORK"
echo
TABLE_ARGS=("$WORK")
[ "$CPU" = 1 ] && TABLE_ARGS+=(--cpu)
"$PYTHON" benchmarks/gpu_check_table.py "${TABLE_ARGS[@]}" | tee "$WORK/table.md"
exit "${PIPESTATUS[0]}"
