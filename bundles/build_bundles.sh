#!/usr/bin/env bash
# Rebuild the committed model bundles from scratch, exactly as their docs/README.md describe:
#   synthetic default cohort -> ichct train (5-minute CPU budget)
#   -> seg: ichct postprocess on the tuning cohort (data_manifests/synth_tuning.json) -> ichct bundle package
#   -> ichct evaluate --bundle on the held-out test split -> ichct bundle package --evaluation (numbers in the docs)
#   -> ichct bundle verify
#
# Usage, from anywhere (paths are relative to the repository root):
#   bash bundles/build_bundles.sh            # both bundles
#   bash bundles/build_bundles.sh cls        # only the classifier (seg: only the segmenter)
# Environment: ICHCT (command, default `ichct`), WORK (run and evaluation folder, default runs/bundle_build),
#   MAX_MINUTES (training budget, default 5), VERSION (bundle version, default 0.1.0),
#   BOOTSTRAP (resamples, default 2000), REUSE_RUNS=1 (package an existing WORK/<kind> run instead of training),
#   CHANGE (changelog entry of VERSION; the entries of earlier versions are kept),
#   REFRESH=1 (no training, no evaluation: regenerate the bundles' configs and docs with this ichct,
#   `ichct bundle refresh`, weights and evaluation kept; with CHANGE, as version VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
ICHCT=${ICHCT:-ichct}
MANIFEST=data_manifests/synth_default.json
WORK=${WORK:-runs/bundle_build}
MAX_MINUTES=${MAX_MINUTES:-5}
VERSION=${VERSION:-0.1.0}
BOOTSTRAP=${BOOTSTRAP:-2000}
kinds=${*:-seg cls}

if [ -z "${REFRESH:-}" ] && [ ! -f data/synth_default/cohort.json ]; then
  $ICHCT synth --default-cohort                        # data/synth_default, matches the committed manifest
fi
mkdir -p "$WORK"
for kind in $kinds; do
  case $kind in
    seg) name=ich_ct_segmentation ;;
    cls) name=ich_ct_classification ;;
    *) echo "unknown model kind: $kind (seg or cls)" >&2; exit 2 ;;
  esac
  if [ -n "${REFRESH:-}" ]; then
    $ICHCT bundle refresh "bundles/$name" ${CHANGE:+--version "$VERSION" --change "$CHANGE"}
    $ICHCT bundle verify "bundles/$name"
    continue
  fi
  run=$WORK/$kind
  evaluation=$WORK/eval_$kind
  if [ -z "${REUSE_RUNS:-}" ] || [ ! -f "$run/best.pt" ]; then
    rm -rf "$run"
    $ICHCT train "$kind" --manifest "$MANIFEST" --fold 0 --out "$run" --max-minutes "$MAX_MINUTES" --seed 0
  fi
  if [ "$kind" = seg ]; then  # the confidence filter, chosen on held-out studies of the same render
    if [ ! -f data/synth_tuning/cohort.json ]; then
      $ICHCT synth data/synth_tuning --patients 80 --seed 11 --matrix 128 --slices 32 --hard-negative-fraction 0.5 \
        --follow-up-fraction 0               # matches the committed data_manifests/synth_tuning.json
    fi
    $ICHCT postprocess "$run" --manifest data_manifests/synth_tuning.json --split test
  fi
  rm -rf "$evaluation"
  $ICHCT bundle package "$run" "bundles/$name" --version "$VERSION" --force ${CHANGE:+--change "$CHANGE"}
  $ICHCT evaluate --bundle "bundles/$name" --manifest "$MANIFEST" --split test --out "$evaluation" \
    --bootstrap "$BOOTSTRAP" --seed 0
  $ICHCT bundle package "$run" "bundles/$name" --version "$VERSION" --force --evaluation "$evaluation" \
    ${CHANGE:+--change "$CHANGE"}
  $ICHCT bundle verify "bundles/$name"
done
