#!/usr/bin/env bash
# Rebuild the committed model bundles from scratch, exactly as their docs/README.md describe:
#   committed synthetic cohort (`ichct synth --cohort NAME`) -> ichct train
#     (seg: synth_large, 60-minute CPU budget; cls: the default cohort synth_default, 5 minutes)
#   -> seg: that network fine-tuned for 60 minutes on synth_variety (image-formation variety), that one for
#      70 minutes on synth_large_variety (the two merged, `ichct manifest merge`), and the three averaged
#      (`ichct ensemble`: the segmenter of 0.10.0 and later)
#   -> ichct bundle package --tta-mirror-axes --brain-reference-hu (test-time mirroring, brain-referenced HU;
#      seg: --classifier-slice-gate, its components dropped beside the classifier on slices it calls quiet,
#      and --sw-overlap, the sliding-window overlap)
#   -> seg: ichct postprocess of the bundle on the tuning cohort (data_manifests/synth_tuning.json: confidence
#      filter within a false-blood budget, minimum component volume, seg_peak threshold)
#   -> ichct evaluate --bundle on the held-out test split of its cohort (and, for a model not trained on the
#      default cohort, on the default cohort's test split too)
#   -> ichct bundle refresh --evaluation [--also-evaluated default_test=...] (numbers in the docs)
#   -> with both bundles: the shifted-domain benchmark (benchmarks/domain_shift.py), kept as shifted_domain
#   -> ichct bundle verify
#
# Usage, from anywhere (paths are relative to the repository root):
#   bash bundles/build_bundles.sh            # both bundles (about 3 h 50 min on 2 CPU cores)
#   bash bundles/build_bundles.sh cls        # only the classifier (seg: only the segmenter; no shifted benchmark)
# Environment: ICHCT (command, default `ichct`), PYTHON (the interpreter ichct is installed in, for the
#   benchmark; default `python`), WORK (run and evaluation folder, default runs/bundle_build),
#   SEG_COHORT / CLS_COHORT (committed synthetic cohort each trains on, default synth_large / synth_default),
#   SEG_MINUTES / CLS_MINUTES (training budget, default 60 / 5), SEG_EPOCHS / CLS_EPOCHS (epoch cap,
#   default 1000 / empty: the budget stops the segmenter, the training config's own cap the classifier),
#   SEG_CONFIG / CLS_CONFIG (training overrides, `ichct train --config`; default bundles/seg_train_config.json:
#   the segmenter trains with brain-referenced HU / empty),
#   TTA (test-time mirroring axes of both bundles, default 0: left-right / the first in-plane axis; none: off),
#   BRAIN_HU (brain-referenced HU level of both bundles, default 30; none: off),
#   SLICE_GATE (the segmenter's classifier_slice_gate, default 0.4; 0: off),
#   SW_OVERLAP (the segmenter's sliding-window overlap, default 0.75: about 2x the segmenter's time of 0.5),
#   MAX_FALSE_BLOOD_ML (the segmenter's false-blood budget, `ichct postprocess --max-false-blood-ml`, default 1),
#   SEG_ENSEMBLE (1: the three-network segmenter above, default; 0: the synth_large network alone),
#   VARIETY_MINUTES / UNION_MINUTES (the two fine-tuning budgets, default 60 / 70),
#   VERSION (bundle version, default 0.1.0), BOOTSTRAP (resamples, default 2000), SHIFTED=0 (skip the shifted-domain benchmark),
#   REUSE_RUNS=1 (package an existing WORK/<kind> run instead of training),
#   CHANGE (changelog entry of VERSION; the entries of earlier versions are kept),
#   REFRESH=1 (no training, no evaluation: regenerate the bundles' configs and docs with this ichct,
#   `ichct bundle refresh`, weights and evaluation kept; with CHANGE, as version VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
ICHCT=${ICHCT:-ichct}
PYTHON=${PYTHON:-python}
SEG_COHORT=${SEG_COHORT:-synth_large}
SEG_MINUTES=${SEG_MINUTES:-60}
SEG_EPOCHS=${SEG_EPOCHS:-1000}
SEG_CONFIG=${SEG_CONFIG:-bundles/seg_train_config.json}
CLS_COHORT=${CLS_COHORT:-synth_default}
CLS_MINUTES=${CLS_MINUTES:-5}
CLS_EPOCHS=${CLS_EPOCHS:-}
CLS_CONFIG=${CLS_CONFIG:-}
TTA=${TTA:-0}
BRAIN_HU=${BRAIN_HU:-30}
SLICE_GATE=${SLICE_GATE:-0.4}
SW_OVERLAP=${SW_OVERLAP:-0.75}
MAX_FALSE_BLOOD_ML=${MAX_FALSE_BLOOD_ML:-1}
SEG_ENSEMBLE=${SEG_ENSEMBLE:-1}
VARIETY_MINUTES=${VARIETY_MINUTES:-60}
UNION_MINUTES=${UNION_MINUTES:-70}
DEFAULT_MANIFEST=data_manifests/synth_default.json
WORK=${WORK:-runs/bundle_build}
VERSION=${VERSION:-0.1.0}
BOOTSTRAP=${BOOTSTRAP:-2000}
kinds=${*:-seg cls}

ensure_cohort() {  # regenerate a committed synthetic cohort unless it is there
  if [ ! -f "data/$1/cohort.json" ]; then $ICHCT synth --cohort "$1"; fi
}
finetune() {  # finetune FROM OUT MANIFEST MINUTES CONFIG SEED: a segmenter run fine-tuned from another's weights
  if [ -z "${REUSE_RUNS:-}" ] || [ ! -f "$2/best.pt" ]; then
    rm -rf "$2"
    $ICHCT train seg --manifest "$3" --fold 0 --out "$2" --init-weights "$1" --max-minutes "$4" --epochs 1000 \
      --config "$5" --seed "$6"
  fi
}
bundle_name() {
  case $1 in
    seg) echo ich_ct_segmentation ;;
    cls) echo ich_ct_classification ;;
    *) echo "unknown model kind: $1 (seg or cls)" >&2; return 2 ;;
  esac
}

if [ -z "${REFRESH:-}" ]; then
  ensure_cohort synth_default                                 # the default test split, evaluated for every bundle
fi
mkdir -p "$WORK"
for kind in $kinds; do
  name=$(bundle_name "$kind")
  if [ -n "${REFRESH:-}" ]; then
    $ICHCT bundle refresh "bundles/$name" ${CHANGE:+--version "$VERSION" --change "$CHANGE"}
    $ICHCT bundle verify "bundles/$name"
    continue
  fi
  if [ "$kind" = seg ]; then cohort=$SEG_COHORT minutes=$SEG_MINUTES epochs=$SEG_EPOCHS config=$SEG_CONFIG
  else cohort=$CLS_COHORT minutes=$CLS_MINUTES epochs=$CLS_EPOCHS config=$CLS_CONFIG; fi
  ensure_cohort "$cohort"
  MANIFEST=data_manifests/$cohort.json
  run=$WORK/$kind
  evaluation=$WORK/eval_$kind
  if [ -z "${REUSE_RUNS:-}" ] || [ ! -f "$run/best.pt" ]; then
    rm -rf "$run"
    $ICHCT train "$kind" --manifest "$MANIFEST" --fold 0 --out "$run" --max-minutes "$minutes" \
      ${epochs:+--epochs "$epochs"} ${config:+--config "$config"} --seed 0
  fi
  if [ "$kind" = seg ] && [ "$SEG_ENSEMBLE" = 1 ]; then  # two fine-tuned copies, the three averaged
    ensure_cohort synth_variety
    finetune "$run" "$WORK/seg_variety" data_manifests/synth_variety.json "$VARIETY_MINUTES" \
      bundles/seg_finetune_variety.json 0
    finetune "$WORK/seg_variety" "$WORK/seg_union" data_manifests/synth_large_variety.json "$UNION_MINUTES" \
      bundles/seg_finetune_union.json 1
    $ICHCT ensemble --member "$run" --member "$WORK/seg_variety" --member "$WORK/seg_union" \
      --out "$WORK/seg_ensemble" --force
    run=$WORK/seg_ensemble
  fi
  rm -rf "$evaluation" "${evaluation}_default"
  gate=()  # the segmenter beside the classifier drops components on slices the classifier calls quiet
  if [ "$kind" = seg ]; then gate=(--classifier-slice-gate "$SLICE_GATE" --sw-overlap "$SW_OVERLAP"); fi
  $ICHCT bundle package "$run" "bundles/$name" --version "$VERSION" --force --tta-mirror-axes "$TTA" \
    --brain-reference-hu "$BRAIN_HU" "${gate[@]}" ${CHANGE:+--change "$CHANGE"}
  if [ "$kind" = seg ]; then  # the confidence filter of the bundle's inference, chosen on held-out studies
    ensure_cohort synth_tuning
    $ICHCT postprocess "bundles/$name" --manifest data_manifests/synth_tuning.json --split test \
      --max-false-blood-ml "$MAX_FALSE_BLOOD_ML"
  fi
  $ICHCT evaluate --bundle "bundles/$name" --manifest "$MANIFEST" --split test --out "$evaluation" \
    --bootstrap "$BOOTSTRAP" --seed 0
  also=()
  if [ "$MANIFEST" != "$DEFAULT_MANIFEST" ]; then
    $ICHCT evaluate --bundle "bundles/$name" --manifest "$DEFAULT_MANIFEST" --split test --out "${evaluation}_default" \
      --bootstrap "$BOOTSTRAP" --seed 0
    also=(--also-evaluated "default_test=${evaluation}_default")
  fi
  $ICHCT bundle refresh "bundles/$name" --evaluation "$evaluation" "${also[@]}"
  $ICHCT bundle verify "bundles/$name"
done
# the shifted-domain benchmark scores both bundles together; each keeps it as docs/evaluation_shifted_domain
if [ -z "${REFRESH:-}" ] && [ "${SHIFTED:-1}" != 0 ] && [[ " $kinds " == *" seg "* ]] && [[ " $kinds " == *" cls "* ]]; then
  rm -rf "$WORK/shifted/evaluation"
  $PYTHON benchmarks/domain_shift.py --work "$WORK/shifted" --bundles bundles/ich_ct_segmentation \
    bundles/ich_ct_classification --out "$WORK/shifted_out"
  for kind in seg cls; do
    name=$(bundle_name "$kind")
    $ICHCT bundle refresh "bundles/$name" --also-evaluated "shifted_domain=$WORK/shifted/evaluation"
    $ICHCT bundle verify "bundles/$name"
  done
fi
