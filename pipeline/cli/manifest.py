"""``ichct manifest build``, ``check`` and ``export-nnunet``: patient-level split manifests."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from ichct.pipeline.cli.arg_types import fraction

logger = logging.getLogger("ichct.manifest")

EXIT_OK, EXIT_DATA_ERROR, EXIT_USAGE = 0, 1, 2


def _folds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 2:  # `ichct train` validates on one fold and trains on the others
        raise argparse.ArgumentTypeError(f"needs at least 2 folds (one to validate on, one or more to train on), "
                                         f"got {value}")
    return value


def _json_path(text: str) -> str:
    if not text.endswith(".json"):
        raise argparse.ArgumentTypeError("the manifest must be a .json file")
    return text


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from ichct.pipeline.cli.cluster_args import add_cluster_arguments
    from ichct.pipeline.manifests.model import SOURCES

    m = subparsers.add_parser("manifest", help="build, check and export patient-level split manifests",
                              description="Patient-level split manifests (MONAI datalist JSON): every study of a "
                                          "patient in one fold or in the test set; leakage checks.")
    actions = m.add_subparsers(dest="manifest_action", metavar="ACTION")
    actions.required = True

    b = actions.add_parser("build", parents=[common], help="build a manifest from a data set",
                           description="Read a data set with its adapter, split it by patient into a test set and "
                                       "stratified folds, check the result and write it.")
    b.add_argument("--source", required=True, choices=SOURCES, help="data set layout")
    b.add_argument("--root", required=True, help="the data set's folder")
    b.add_argument("--out", required=True, type=_json_path, help="manifest to write (e.g. data_manifests/NAME.json)")
    b.add_argument("--folds", type=_folds, default=5, help="cross-validation folds, at least 2 (default 5)")
    b.add_argument("--test-fraction", type=fraction, default=0.2, help="share of studies held out as test (default 0.2)")
    b.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    b.add_argument("--name", default=None, help="manifest name (default: the file name)")
    b.add_argument("--link-dir", default=None, help="folder for pseudonymous links (default: <out without .json>.links)")
    b.add_argument("--no-cache", action="store_true", help="do not use the pixel-hash cache")
    add_cluster_arguments(b)  # --workers: the header scan's Dask worker processes
    b.set_defaults(func=run_build)

    c = actions.add_parser("check", parents=[common], help="check manifests for leakage and broken files",
                           description="Exit 1 with one line per problem: a patient, series or identical pixel data "
                                       "in two splits or folds (within or across the manifests given), missing or "
                                       "unreadable files, labels off their image grid.")
    c.add_argument("manifests", nargs="+", metavar="MANIFEST", help="manifest JSON file(s), checked together")
    c.add_argument("--no-pixels", action="store_true", help="skip pixel hashing (faster; copies under new UIDs go unseen)")
    c.add_argument("--workers", type=int, default=None, help="reader threads")
    c.add_argument("--no-cache", action="store_true", help="do not use the pixel-hash cache")
    c.set_defaults(func=run_check)
    _register_merge(actions, common)
    _register_export(actions, common)


def _register_merge(actions: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    g = actions.add_parser("merge", parents=[common], help="merge split manifests, each study in its own split and fold",
                           description="Write one manifest holding the studies of several (e.g. two data sets "
                                       "trained on together) without splitting again: fold k of the result is "
                                       "fold k of every input, test studies stay test studies. The inputs must "
                                       "share their fold count, salt and labels; the result is checked as one "
                                       "manifest before it is written (a patient, series or identical pixel data in "
                                       "two splits or folds refuses the merge). Paths are rewritten relative to --out.")
    g.add_argument("manifests", nargs="+", metavar="MANIFEST", help="two or more manifest JSON files")
    g.add_argument("--out", required=True, type=_json_path, help="manifest to write")
    g.add_argument("--name", default=None, help="manifest name (default: the file name)")
    g.add_argument("--no-pixels", action="store_true", help="skip pixel hashing (faster; copies under new UIDs go unseen)")
    g.add_argument("--workers", type=int, default=None, help="reader threads")
    g.add_argument("--no-cache", action="store_true", help="do not use the pixel-hash cache")
    g.set_defaults(func=run_merge)


def _dataset_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 999:
        raise argparse.ArgumentTypeError(f"must be from 1 to 999 (nnU-Net's three digits), got {value}")
    return value


def _dataset_name(text: str) -> str:
    from ichct.errors import InputError
    from ichct.pipeline.manifests.nnunet_export import dataset_folder_name

    try:
        dataset_folder_name(1, text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("dataset name ", "")) from None
    return text


def _register_export(actions: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    e = actions.add_parser("export-nnunet", parents=[common], help="write a manifest as an nnU-Net v2 raw dataset",
                           description="Write OUT/DatasetNNN_<name>/ for nnU-Net v2: images in HU as `ichct convert` "
                                       "writes them, labels (uint8) on their grid, dataset.json, the test split in "
                                       "imagesTs/labelsTs, splits_final.json with the manifest's patient-level folds "
                                       "(copy it into the preprocessed dataset folder after "
                                       "nnUNetv2_plan_and_preprocess) and ichct_case_map.json (case IDs back to "
                                       "studies, for `ichct evaluate --map`). Every entry needs a voxel label.")
    e.add_argument("manifest", metavar="MANIFEST", help="split manifest (checked before use)")
    e.add_argument("out", metavar="OUT", help="folder receiving DatasetNNN_<name>/ (e.g. $nnUNet_raw)")
    e.add_argument("--dataset-id", required=True, type=_dataset_id, help="nnU-Net dataset id, 1-999")
    e.add_argument("--name", default="ICH", type=_dataset_name, help="dataset name and case-ID prefix (default ICH: Dataset<id>_ICH, ICH_0001)")
    e.add_argument("--workers", type=int, default=None, help="reader threads")
    e.add_argument("--no-cache", action="store_true", help="do not use the pixel-hash cache")
    e.set_defaults(func=run_export_nnunet)


def run_build(args: argparse.Namespace) -> int:
    from ichct.pipeline.cli.cluster_args import cluster_spec
    from ichct.pipeline.manifests import ManifestError, build_manifest

    command = shlex.join(["ichct", "manifest", "build", "--source", args.source, "--root", args.root, "--out", args.out,
                          "--folds", str(args.folds), "--test-fraction", f"{args.test_fraction:g}", "--seed", str(args.seed)]
                         + (["--name", args.name] if args.name else []))
    scans: list = []
    try:
        doc = build_manifest(args.source, args.root, args.out, folds=args.folds, test_fraction=args.test_fraction,
                             seed=args.seed, name=args.name, link_dir=args.link_dir, workers=args.workers,
                             cache=not args.no_cache, command=command, cluster=cluster_spec(args), on_scan=scans.append)
    except ManifestError as exc:
        for line in exc.problems:
            sys.stdout.write(line + "\n")
        where = "" if Path(exc.manifest) == Path(args.out) else f" in {exc.manifest}"  # e.g. a label CSV
        logger.error("%s: not written: %d problem(s)%s", args.out, len(exc.problems), where)
        return EXIT_DATA_ERROR
    sys.stdout.write(_split_summary(args.out, doc) + "\n")
    for scan in scans:
        sys.stdout.write(f"header scan: {scan.n_files} file(s) in {scan.seconds:.1f} s ({scan.files_per_s:.0f} files/s, "
                         f"{scan.workers} worker(s))\n")
    return EXIT_OK


def _split_summary(path: str, doc: dict) -> str:
    """``PATH: N training studies in F fold(s) (a/b/...), M test, P patient(s)`` of a written manifest."""
    sizes = [sum(1 for e in doc["training"] if e["fold"] == k) for k in range(doc["num_folds"])]
    patients = {e["patient_key"] for e in doc["training"] + doc["test"]}
    return (f"{path}: {len(doc['training'])} training studies in {doc['num_folds']} fold(s) "
            f"({'/'.join(map(str, sizes))}), {len(doc['test'])} test, {len(patients)} patient(s)")


def run_check(args: argparse.Namespace) -> int:
    from ichct.pipeline.manifests import check_manifests

    report = check_manifests(args.manifests, verify_pixels=not args.no_pixels, cache=not args.no_cache, workers=args.workers)
    for note in report.notes:
        logger.warning("%s", note)
    if not report.ok:
        for line in report.problems:
            sys.stdout.write(line + "\n")
        logger.error("%d problem(s) in %s", len(report.problems), ", ".join(args.manifests))
        return EXIT_DATA_ERROR
    for line in report.summaries:
        sys.stdout.write(line + "\n")
    sys.stdout.write(f"OK: no problems in {len(args.manifests)} manifest(s)\n")
    return EXIT_OK


def run_merge(args: argparse.Namespace) -> int:
    from ichct.pipeline.manifests import ManifestError, merge_manifests

    if len(args.manifests) < 2:
        logger.error("manifest merge needs at least two manifests, got %d", len(args.manifests))
        return EXIT_USAGE
    command = shlex.join(["ichct", "manifest", "merge", *args.manifests, "--out", args.out]
                         + (["--name", args.name] if args.name else []))
    try:
        doc = merge_manifests(args.manifests, args.out, name=args.name, command=command,
                              verify_pixels=not args.no_pixels, cache=not args.no_cache, workers=args.workers)
    except ManifestError as exc:
        for line in exc.problems:
            sys.stdout.write(line + "\n")
        logger.error("%s: not written: %d problem(s)", args.out, len(exc.problems))
        return EXIT_DATA_ERROR
    sys.stdout.write(f"{_split_summary(args.out, doc)}, from {len(args.manifests)} manifests\n")
    return EXIT_OK


def run_export_nnunet(args: argparse.Namespace) -> int:
    from ichct.pipeline.manifests import ManifestError, export_nnunet

    try:
        export = export_nnunet(args.manifest, args.out, args.dataset_id, name=args.name, workers=args.workers,
                               cache=not args.no_cache)
    except ManifestError as exc:
        for line in exc.problems:
            sys.stdout.write(line + "\n")
        logger.error("%s: nothing exported: %d problem(s) in %s", args.out, len(exc.problems), exc.manifest)
        return EXIT_DATA_ERROR
    sys.stdout.write(f"{export.path}: {export.n_training} training case(s) in {export.num_folds} fold(s), "
                     f"{export.n_test} test case(s), {export.label_values} labels "
                     f"({', '.join(f'{v} {k}' for k, v in export.labels.items())})\n"
                     f"next: copy {export.path / 'splits_final.json'} into $nnUNet_preprocessed/{export.path.name}/ "
                     f"after nnUNetv2_plan_and_preprocess (see docs/nnunet.md)\n")
    return EXIT_OK
