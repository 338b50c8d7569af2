#!/usr/bin/env bash
# One device call for issue 11's GPU target (fold 0 >= 0.85 within 15 minutes of GPU time): four recipes
# trained side by side on one GPU (a small U-Net leaves an H100/H200 mostly idle, so four runs cost about
# what one does), each fitted to MIN minutes by benchmarks/quality.py (budget fit, saltseg train on fold 0
# of the depth split, saltseg tune); then the GPU tests if time is left. Prepared here, once:
#   python benchmarks/device_pack.py --data ../shared/data/tgs-salt      (-> .device/, git-ignored)
# then one device call, in the repository root, with carry [".device"] and timeout_s 590:
#   OUT=$OUT bash benchmarks/device_fold0.sh 7.5
# Everything small (logs, result JSONs, metrics.csv, tuning) comes back in $OUT/gpu_runs.tar.gz, re-made
# every 40 s so that a call cut at its limit still returns what it had. Rehearse it on the CPU with
#   ONLY=base16 PY=.venv/bin/python SKIP_WHEELS=1 TEST_IF_UNDER_S=0 bash benchmarks/device_fold0.sh 0.2
set -u
MIN=${1:-7}
REPO=$PWD
OUT=${OUT:-/tmp/gpu_out}
PY=${PY:-python3}
case $PY in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;; esac  # the runs cd elsewhere
mkdir -p "$OUT"
T0=$(date +%s)
if [ -d .device/whl ] && [ "${SKIP_WHEELS:-0}" != 1 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
nvidia-smi -L 2>/dev/null
$PY -c "import torch, lightning, segmentation_models_pytorch as smp, timm, saltseg; print('torch', torch.__version__, 'lightning', lightning.__version__, 'smp', smp.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())" || exit 1
declare -A VARIANTS=(
  [base16]="configs/cpu_fast.yaml"
  [base32]="configs/cpu_fast.yaml model.base_channels=32"
  [base32_strong]="benchmarks/recipes/res_unet_strong_aug.yaml model.base_channels=32"
  [base32_strong_scse]="benchmarks/recipes/res_unet_strong_aug.yaml model.base_channels=32 model.attention=scse"
)
archive() {
  (cd /tmp && tar czf "$OUT/gpu_runs.tar.gz.part" --exclude='*.safetensors' --exclude='*.ckpt' --exclude='*.npy' \
    --exclude='*.npz' --exclude='events.out.*' w_*/log.txt w_*/benchmarks w_*/run 2>/dev/null \
    && mv "$OUT/gpu_runs.tar.gz.part" "$OUT/gpu_runs.tar.gz" || rm -f "$OUT/gpu_runs.tar.gz.part")
}
(while sleep 40; do archive; done) >/dev/null 2>&1 &
ARCHIVER=$!
NAMES=${ONLY:-${!VARIANTS[@]}}
PIDS=""
for v in $NAMES; do
  set -- ${VARIANTS[$v]}
  cfg=$1; shift
  mkdir -p "/tmp/w_$v/benchmarks/results"
  (cd "/tmp/w_$v" && $PY "$REPO/benchmarks/quality.py" --data "$REPO/.device/tgs-salt" --minutes "$MIN" \
    --skip-reference --config "$REPO/$cfg" --out "/tmp/w_$v/run" train.num_workers=3 "$@" \
    > "/tmp/w_$v/log.txt" 2>&1; echo "exit $?" >> "/tmp/w_$v/log.txt") &
  PIDS="$PIDS $!"
done
wait $PIDS
echo "trainings done after $(( $(date +%s) - T0 )) s"
for v in $NAMES; do echo "== $v"; grep -E "calibration|saltseg:|Error|error|exit" "/tmp/w_$v/log.txt" | cut -c1-400; done
if [ $(( $(date +%s) - T0 )) -lt ${TEST_IF_UNDER_S:-470} ]; then
  timeout 60 $PY -m pytest -q -x tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -5
fi
# everything small in one archive (no weights): logs, result JSONs, metrics, tuning outputs
kill $ARCHIVER 2>/dev/null; pkill -P $ARCHIVER 2>/dev/null
archive
ls -la "$OUT"
echo "total $(( $(date +%s) - T0 )) s"
