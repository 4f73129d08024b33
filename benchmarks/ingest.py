"""Ingest benchmark: ichct vs dcm2niix vs SimpleITK vs MONAI on the same DICOM series.

Writes a synthetic 512x512x300 CT series (and optionally the small quirk cases) once into a cache
folder, then converts it with each tool in a fresh subprocess, best of ``--repeat`` runs, and prints
wall time, peak resident memory (the child's maxrss) and the ratio to dcm2niix.

Run: ``python benchmarks/ingest.py [--slices 300] [--matrix 512] [--repeat 3] [--cache DIR]``.
Needs the ``bench`` extra (``pip install -e .[bench]``) for dcm2niix.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np


def write_series(folder: Path, n_slices: int, matrix: int, tilt_deg: float = 0.0, seed: int = 0) -> None:
    """A head-like phantom (skull shell, brain, noise) as single-frame CT DICOM, shuffled names."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    spacing, dz = 0.45, 0.625
    yy, xx = np.mgrid[0:matrix, 0:matrix]
    cy = cx = (matrix - 1) / 2
    tilt = np.radians(tilt_deg)
    names = rng.permutation(n_slices)
    for k in range(n_slices):
        zf = (k - n_slices / 2) / (n_slices / 2)
        scale = np.sqrt(max(1e-3, 1 - 0.8 * zf * zf))
        r = np.hypot((yy - cy) / (0.42 * matrix * scale), (xx - cx) / (0.36 * matrix * scale))
        hu = np.full((matrix, matrix), -1000.0)
        hu[r < 1.0] = 1000.0
        hu[r < 0.93] = 35.0
        hu += rng.normal(0, 5, hu.shape)
        stored = np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)
        ds = Dataset()
        meta = FileMetaDataset()
        sop = generate_uid()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "BENCH", "Bench^Phantom"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 2, k + 1, 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ConvolutionKernel = "H30s"
        ds.ImageOrientationPatient = [1, 0, 0, 0, float(np.cos(tilt)), float(np.sin(tilt))]
        ds.ImagePositionPatient = [-cx * spacing, -cy * spacing, k * dz]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = dz
        ds.Rows = ds.Columns = matrix
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"IM{names[k]:05d}", enforce_file_format=True)


PEERS: dict[str, str] = {
    "ichct": "ichct convert {src} {out}.nii.gz -q",
    "dcm2niix": "dcm2niix -z y -b n -f bench -o {outdir} {src}",
    "ichct (.nii)": "ichct convert {src} {out}.nii -q",
    "dcm2niix (.nii)": "dcm2niix -z n -b n -f bench -o {outdir} {src}",
    "SimpleITK": textwrap.dedent(
        """
        python -c "import SimpleITK as sitk, sys
        r = sitk.ImageSeriesReader(); r.SetFileNames(r.GetGDCMSeriesFileNames(sys.argv[1]))
        sitk.WriteImage(r.Execute(), sys.argv[2] + '.nii.gz')" {src} {out}
        """
    ).strip(),
    "MONAI PydicomReader": textwrap.dedent(
        """
        python -c "import sys, monai, nibabel as nib, numpy as np
        from monai.transforms import LoadImage
        img = LoadImage(reader='PydicomReader', image_only=True)(sys.argv[1])
        nib.save(nib.Nifti1Image(np.asarray(img), np.asarray(img.affine)), sys.argv[2] + '.nii.gz')" {src} {out}
        """
    ).strip(),
}


def run_once(command: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one shell command run as a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
        raise RuntimeError(f"command failed ({proc.returncode}): {command}\n{err}")
    return wall, usage.ru_maxrss / 1024.0


def bench(src: Path, repeat: int, peers: list[str]) -> list[tuple[str, float, float]]:
    rows = []
    bindir = Path(sys.executable).parent
    env_path = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["PATH"] = env_path
    for name in peers:
        if name.startswith("dcm2niix") and shutil.which("dcm2niix") is None:
            print(f"# {name}: not installed (pip install dcm2niix); skipped", file=sys.stderr)
            continue
        best_wall, best_mem = float("inf"), float("inf")
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = PEERS[name].format(src=src, out=Path(tmp) / "bench", outdir=tmp)
                wall, mem = run_once(cmd)
            best_wall, best_mem = min(best_wall, wall), min(best_mem, mem)
        rows.append((name, best_wall, best_mem))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tilt", type=float, default=0.0, help="gantry tilt of the generated series (deg)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ichct-bench-ingest")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of: " + ", ".join(PEERS))
    args = parser.parse_args()
    src = args.cache / f"series_{args.matrix}x{args.matrix}x{args.slices}_tilt{args.tilt:g}"
    if not (src.is_dir() and len(list(src.iterdir())) == args.slices):
        shutil.rmtree(src, ignore_errors=True)
        print(f"# writing {args.slices} slices of {args.matrix}x{args.matrix} into {src}", file=sys.stderr)
        write_series(src, args.slices, args.matrix, tilt_deg=args.tilt)
    volume_mib = args.matrix * args.matrix * args.slices * 2 / 2**20
    rows = bench(src, args.repeat, [p.strip() for p in args.peers.split(",") if p.strip()])
    walls = {name: wall for name, wall, _ in rows}
    print(f"\nIngest of a {args.matrix}x{args.matrix}x{args.slices} CT series (int16 volume {volume_mib:.0f} MiB), "
          f"best of {args.repeat}, output .nii.gz unless marked .nii, {os.cpu_count()} CPU(s)\n")
    print("| tool | wall s | peak RSS MiB | RSS / volume | time vs dcm2niix (same output format) |")
    print("|---|---:|---:|---:|---:|")
    for name, wall, mem in rows:
        ref = walls.get("dcm2niix (.nii)" if name.endswith("(.nii)") else "dcm2niix")
        ratio = f"{wall / ref:.2f}" if ref else "-"
        print(f"| {name} | {wall:.2f} | {mem:.0f} | {mem / volume_mib:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
