"""``ichct info`` and ``ichct convert``."""

from __future__ import annotations

import argparse
import json
import sys

from ichct.pipeline.ingest import convert_all_series, convert_series, folder_info


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("info", parents=[common], help="list the series in a DICOM folder",
                              description="List every series found under a DICOM folder and the one `convert` would choose.")
    p.add_argument("folder", help="DICOM folder (searched recursively) or DICOMDIR")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--workers", type=int, default=None, help="reader threads")
    p.set_defaults(func=run_info)

    c = subparsers.add_parser("convert", parents=[common], help="convert a DICOM CT series to NIfTI (HU)",
                              description="Convert the diagnostic axial CT series (or --series UID) to a NIfTI volume in HU "
                                          "with the correct world affine, plus a JSON sidecar (<out>.json).")
    c.add_argument("folder", help="DICOM folder (searched recursively) or DICOMDIR")
    c.add_argument("out", nargs="?", metavar="OUT", help="output .nii.gz or .nii (not with --all-series)")
    c.add_argument("--series", default=None, metavar="UID", help="series instance UID to convert (see `ichct info`)")
    c.add_argument("--all-series", default=None, metavar="OUTDIR",
                   help="convert every CT series into OUTDIR (instead of OUT and --series)")
    c.add_argument("--no-tilt-correction", action="store_true",
                   help="keep a gantry-tilted stack as acquired, with a sheared affine (NIfTI sform)")
    c.add_argument("--workers", type=int, default=None, help="reader threads")
    c.set_defaults(func=run_convert, _parser=c)


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return "x".join(_fmt(v, digits) for v in value)
    return str(value)


def run_info(args: argparse.Namespace) -> int:
    info = folder_info(args.folder, workers=args.workers)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    out = sys.stdout
    out.write(f"{info['folder']}: {info['n_files']} file(s), {len(info['series'])} series, {len(info['skipped'])} skipped\n")
    header = ("", "series UID", "#", "description", "mod", "plane", "slices", "pixel mm", "slice mm", "tilt", "kernel", "transfer syntax", "image type / note")
    rows = []
    for s in info["series"]:
        note = s["excluded_reason"] or "/".join(s["image_type"][:3])
        if s.get("refused"):  # a stand-in series of files from several series: convert and predict refuse it
            note = f"refused: {s['refused']}"
        if s.get("missing_slices"):
            note += f"; {s['missing_slices']} missing slice(s)"
        elif s.get("uniform_spacing") is False:
            note += "; uneven spacing"
        rows.append(("*" if s["default"] else "", s["group_id"], _fmt(s["series_number"]), s["description"][:28], s["modality"], s["plane"],
                     str(s["n_slices"]), _fmt(s["pixel_spacing_mm"], 3), _fmt(s["slice_spacing_mm"], 3),
                     _fmt(s["tilt_deg"], 1), s["kernel"], s["transfer_syntax_short"], note))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        out.write("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
    if info["default_series_uid"] and any(s["default"] and s.get("refused") for s in info["series"]):
        out.write(f"default (marked *): {info['default_series_uid']}, which convert refuses (see its note)\n")
    elif info["default_series_uid"]:
        out.write(f"default (marked *): {info['default_series_uid']}\n")
    else:
        out.write("default: none (no usable axial CT series)\n")
    for s in info["skipped"]:
        out.write(f"skipped {s['file']}: {s['reason']}\n")
    return 0


def _usage(args: argparse.Namespace, msg: str) -> int:
    args._parser.print_usage(sys.stderr)
    sys.stderr.write(f"{args._parser.prog}: error: {msg}\n")
    return 2


def run_convert(args: argparse.Namespace) -> int:
    if args.all_series is not None:
        if not args.all_series:
            return _usage(args, "argument --all-series: needs an output folder OUTDIR")
        if args.out is not None:
            return _usage(args, f"argument OUT ({args.out}) and --all-series are mutually exclusive: "
                                "--all-series writes one file per series into its OUTDIR")
        if args.series is not None:
            return _usage(args, "--series and --all-series are mutually exclusive")
    elif args.out is None:
        return _usage(args, "the following arguments are required: OUT (an output .nii.gz), or --all-series OUTDIR")
    elif not args.out.endswith((".nii.gz", ".nii")):
        return _usage(args, f"argument OUT: must end in .nii.gz or .nii, got {args.out!r}")
    if args.all_series is not None:
        results = convert_all_series(args.folder, args.all_series, tilt_correction=not args.no_tilt_correction, workers=args.workers)
        for uid, path, err in results:
            sys.stdout.write(f"{uid}: {path if path else 'skipped (' + str(err) + ')'}\n")
        return 0
    volume = convert_series(args.folder, args.out, series_uid=args.series, tilt_correction=not args.no_tilt_correction,
                            workers=args.workers, progress=not args.quiet and sys.stderr.isatty())
    info = volume.info
    sys.stdout.write(
        f"{args.out}: series {info['series_uid']}, {'x'.join(map(str, info['shape']))} voxels, "
        f"spacing {'x'.join(f'{s:.3f}' for s in info['spacing_mm'])} mm, {info['dtype']} HU"
        + (f", tilt {info['tilt']['angle_deg']:.1f} deg corrected" if info["tilt"]["corrected"] else "")
        + (f", {info['missing_slices']} missing slice(s) resampled" if info["missing_slices"] else "")
        + "\n"
    )
    return 0
