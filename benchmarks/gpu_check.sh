#!/usr/bin/env bash
# The CUDA paths of ichct, end to end, on a machine with a GPU; a table of steps (ok / FAIL, seconds).
#
#   bash benchmarks/gpu_check.sh            # ichct installed (pip install -e ".[test,bench]")
#   WHEELS=.whl bash benchmarks/gpu_check.sh  # first install ichct's dependencies from wheels in .whl
#                                             # (a GPU machine with torch but no network)
#   DEV=cpu bash benchmarks/gpu_check.sh      # the same steps on the CPU (a dry run of this script)
#
# Steps: `ichct demo --quick --device cuda`; `ichct train` (seg and cls) with --amp; `ichct predict`
# of one held-out study on cuda and on cpu, and how far the two outputs differ; `ichct evaluate` on
# cuda; each demo bundle's inference.json and evaluate.json with `python -m monai.bundle run` (the
# configs pick cuda when there is one); multi_gpu_train.json under torchrun on one GPU (nccl); the
# bundle tests; benchmarks/predict.py on cuda. Logs and the table go to $OUT (default /tmp/ichct_gpu_check).
set -uo pipefail
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export ICHCT_SALT=${ICHCT_SALT:-gpu-check-salt-0123456789abcdef}
DEV=${DEV:-cuda}
AMP=$([ "$DEV" = cuda ] && echo --amp)
OUT=${OUT:-/tmp/ichct_gpu_check}
T=$(mktemp -d)
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$OUT/summary.txt"
step() {
  local name=$1 t0 r
  shift
  t0=$(date +%s%N)
  echo "=== $name" >> "$LOG"
  if "$@" >> "$LOG" 2>&1; then r=ok; else r="FAIL($?)"; fi
  printf '%-40s %-8s %7.1f s\n' "$name" "$r" "$(( ($(date +%s%N) - t0) / 1000000 ))e-3" | tee -a "$OUT/summary.txt"
}
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "$WHEELS"/*.whl >> "$LOG" 2>&1 || {
    echo "installing the wheels in $WHEELS failed (see $LOG)"; exit 1; }
  # ichct itself from this checkout, without its pinned torch (the machine's own build is used)
  site=$(python3 -c "import site; print(site.getsitepackages()[0])")
  mkdir -p "$T/pkg" && ln -sfn "$(pwd)" "$T/pkg/ichct" && echo "$T/pkg" > "$site/ichct_checkout.pth"
fi
ichct() { python3 -m ichct "$@"; }
step env python3 -c "import torch, monai, ichct; print(torch.__version__, monai.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
step "demo --quick ($DEV)" ichct demo --quick --device "$DEV" --out "$T/demo" --workers 8
python3 -c "import json; from ichct.pipeline.demo import QUICK_SEG_CONFIG as s, QUICK_CLS_CONFIG as c; \
json.dump(s, open('$T/seg.json', 'w')); json.dump(c, open('$T/cls.json', 'w'))"
for k in seg cls; do
  step "train $k ($DEV $AMP)" ichct train $k --manifest "$T/demo/manifest.json" --fold 0 --out "$T/runs/$k" --epochs 3 \
    --device "$DEV" $AMP --config "$T/$k.json"
done
STUDY=$(cd "$T/demo" && python3 -c "import json, os; m = json.load(open('manifest.json')); print(os.path.abspath(m['test'][0]['image']))")
for d in "$DEV" cpu; do
  step "predict ($d)" ichct predict "$STUDY" "$T/pred_$d" --run "$T/runs/seg" --run "$T/runs/cls" --device "$d" --overwrite
done
step "predict $DEV vs cpu" python3 - "$T/pred_$DEV" "$T/pred_cpu" <<'PY'
import json, sys
import nibabel as nib, numpy as np
a, b = (json.load(open(f"{d}/report.json")) for d in sys.argv[1:])
ma, mb = (np.asarray(nib.load(f"{d}/mask.nii.gz").dataobj) for d in sys.argv[1:])
print("mask voxels differing:", int((ma != mb).sum()), "of", ma.size, "; labelled on cpu:", int((mb > 0).sum()))
dp = max(abs(a["findings"][s]["probability"] - b["findings"][s]["probability"]) for s in a["findings"])
print("largest probability difference:", dp)
calls = [s for s in a["findings"] if a["findings"][s]["call"] != b["findings"][s]["call"]]
print("calls differing:", calls)
sys.exit(1 if calls else 0)
PY
step "evaluate ($DEV)" ichct evaluate --run "$T/runs/seg" --run "$T/runs/cls" --manifest "$T/demo/manifest.json" \
  --out "$T/eval" --device "$DEV" --bootstrap 50
for k in ich_ct_segmentation ich_ct_classification; do
  b="$T/demo/bundles/$k"
  step "bundle $k inference" bash -c "cd $b && python3 -m monai.bundle run --config_file configs/inference.json --input_path '$STUDY' --output_dir $T/bi_$k"
  step "bundle $k evaluate" bash -c "cd $b && python3 -m monai.bundle run --config_file configs/evaluate.json --manifest $T/demo/manifest.json --output_dir $T/be_$k"
done
cp -r "$T/demo/bundles/ich_ct_classification" "$T/cb" && rm -f "$T/cb/models/model.pt"
step "torchrun multi_gpu_train (1 process)" bash -c "cd $T/cb && torchrun --nproc_per_node=1 --master_port=29531 -m monai.bundle run \
  --config_file \"['configs/train.json','configs/multi_gpu_train.json']\" --manifest $T/demo/manifest.json --fold 0 --epochs 1 && test -f models/model.pt"
step "pytest bundle tests" python3 -m pytest -q -p no:cacheprovider tests/test_bundle.py tests/test_bundle_export.py tests/test_devices.py -k "not multi_gpu"
step "benchmarks/predict.py ($DEV)" python3 benchmarks/predict.py --device "$DEV" --repeat 3 --cache "$T/bench"
grep -E "^(mask voxels|largest|calls differing)" "$LOG"
grep -A12 "^ichct predict: 512" "$LOG"
