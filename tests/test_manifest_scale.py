"""Flat-folder scale of ``manifest build --source rsna``: one read per file, on Dask workers.

The lean per-file reader (plain elements decoded from their bytes, the pixel hash from the same
bytes) must give exactly what the reader and the pixel hash gave before, for every encoding the
foreign-DICOM generator writes; and the manifest must not depend on the number of workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

import dicom_factory as fac
import foreign_dicom as fd
from ichct.pipeline.core.cluster import ClusterSpec, dask_client
from ichct.pipeline.manifests import build_manifest, scan as scan_module
from ichct.pipeline.manifests.hashing import dicom_file_digest, pixel_digest_from_bytes
from ichct.pipeline.manifests.scan import scan_files
from ichct.transforms.dicom.discovery import read_file_headers
from ichct.transforms.dicom.validation import quiet_pydicom_values


@pytest.fixture(scope="module")
def foreign_files(tmp_path_factory) -> list[Path]:
    """Files of every encoding the generator writes: RSNA variants, transfer syntaxes, charsets, private tags."""
    base = tmp_path_factory.mktemp("foreign")
    corpus = fd.write_rsna_layout(base / "rsna", studies=3, files_per_series=3, rows=16, pixel_spacing=15.0,
                                  variants=fd.RSNA_VARIANTS, keep_truth=False)
    files = sorted(corpus.image_dir.iterdir())
    kw = dict(n_slices=2, rows=16, pixel_spacing=15.0)
    for syntax in ("explicit", "implicit", "big_endian"):
        files += list(fd.write_transfer_syntax_series(base / syntax, syntax, **kw).files)
    files += list(fd.write_charset_series(base / "latin1", "ISO_IR 100", **kw).files)
    files += list(fd.write_charset_series(base / "utf8", "ISO_IR 192", patient_name="Øvergård^Åse", **kw).files)
    files += list(fd.write_private_tag_series(base / "private", **kw).files)
    files += list(fd.write_private_tag_series(base / "private_implicit", transfer_syntax="implicit", **kw).files)
    files += list(fd.write_ct_series(base / "signed12", signed=True, bits_stored=12, **kw).files)
    return files + _factory_files(base)


def _factory_files(base: Path) -> list[Path]:
    """Enhanced multi-frame, RLE, padding, a scout, an RGB dose screen and bare data sets (no preamble, no meta)."""
    small = dict(rows=12, cols=10, pixel_spacing=(20.0, 22.0))
    files = [fac.write_enhanced_ct(base / "enhanced.dcm", fac.make_stack(3, 5.0, key="enh", **small)),
             *fac.write_series(base / "rle", fac.make_stack(2, 5.0, key="rle", transfer_syntax="rle", **small)),
             *fac.write_series(base / "padded", fac.make_stack(2, 5.0, key="pad", padding_value=-2000,
                                                               pixel_representation=1, fov_radius_mm=90.0, **small)),
             *fac.write_scout(base / "scout", planes=("sagittal",)), fac.write_dose_report(base / "dose")]
    for implicit in (True, False):
        for path in fac.write_series(base / f"bare{implicit}", fac.make_stack(2, 5.0, key=f"bare{implicit}", **small)):
            fac.strip_file_meta(path, implicit)
            files.append(path)
    return files


def test_fast_headers_equal_the_readers(foreign_files):
    with quiet_pydicom_values():
        for path in foreign_files:
            data = path.read_bytes()
            fast = read_file_headers(path, data, fast=True)
            assert fast.skipped is None, (path, fast.skipped)
            assert fast.headers == read_file_headers(path).headers, path


def test_pixel_hash_from_the_bytes_equals_the_decoded_hash(foreign_files):
    for path in foreign_files:
        if path.parent.name.startswith("bare"):
            continue  # dicom_file_digest reads files with a preamble only
        data = path.read_bytes()
        got = read_file_headers(path, data, fast=True)
        assert pixel_digest_from_bytes(path, data, got.headers[0], got.pixel_offset) == dicom_file_digest(path), path


@pytest.mark.parametrize("signed", [False, True])
def test_pixel_hash_masks_and_sign_extends_like_pydicom(tmp_path, signed):
    """Stored bits above BitsStored are garbage: pydicom masks them (and sign-extends signed data)."""
    ds = pydicom.dcmread(fd.write_ct_series(tmp_path / "s", n_slices=1, rows=8, pixel_spacing=30.0).files[0])
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = int(signed), 12, 11
    ds.PixelData = np.random.default_rng(0).integers(0, 65536, (8, 8), dtype=np.uint16).astype("<u2").tobytes()
    path = tmp_path / "garbage_high_bits.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    got = read_file_headers(path, data, fast=True)
    assert pixel_digest_from_bytes(path, data, got.headers[0], got.pixel_offset) == dicom_file_digest(path)


def test_a_file_that_cannot_be_read_is_skipped_with_its_reason(tmp_path):
    good = fd.write_ct_series(tmp_path / "s", n_slices=2, rows=8, pixel_spacing=30.0).files
    cut = tmp_path / "s" / "cut.dcm"
    cut.write_bytes(Path(good[0]).read_bytes()[:-40])
    scan = scan_files([*good, cut, tmp_path / "gone.dcm"])
    assert len(scan.headers) == 2 and set(scan.digests) == {str(p) for p in good}
    reasons = {Path(s.path).name: s.reason for s in scan.skipped}
    assert reasons["cut.dcm"].startswith("truncated DICOM file") and reasons["gone.dcm"].startswith("unreadable file")


@pytest.fixture(scope="module")
def rsna_corpus(tmp_path_factory):
    return fd.write_rsna_layout(tmp_path_factory.mktemp("flat"), studies=6, patients=4, files_per_series=5, rows=16,
                                pixel_spacing=15.0, keep_truth=False)


def _build(corpus, out: Path, **kwargs) -> bytes:
    build_manifest("rsna", corpus.root, out, folds=2, test_fraction=0.3, seed=1, cache=False, command="test", **kwargs)
    return out.read_bytes()


def test_manifest_bytes_do_not_depend_on_the_workers(rsna_corpus, tmp_path, monkeypatch):
    """In this process, on 2 Dask workers (a shared cluster) and on 1: the same bytes."""
    reference = _build(rsna_corpus, tmp_path / "local" / "m.json")
    monkeypatch.setattr(scan_module, "BATCH_FILES", 4)  # several tasks per worker
    monkeypatch.setattr(scan_module, "IN_PROCESS_BELOW", 0)
    seen = []
    with dask_client(ClusterSpec(workers=2)) as client:
        two = _build(rsna_corpus, tmp_path / "two" / "m.json", client=client, on_scan=seen.append)
    one = _build(rsna_corpus, tmp_path / "one" / "m.json", cluster=ClusterSpec(workers=1), on_scan=seen.append)
    assert two == reference and one == reference
    assert [s.workers for s in seen] == [2, 1] and all(s.n_files == rsna_corpus.n_files for s in seen)


def test_the_build_checks_without_scanning_again(rsna_corpus, tmp_path, monkeypatch):
    """Collect reads each file once; the check of the staged links reuses what it learnt."""
    import ichct.transforms.dicom as dicom

    def no_second_scan(*args, **kwargs):
        raise AssertionError("scanned again")

    monkeypatch.setattr(dicom, "scan_folder", no_second_scan)
    doc = json_doc(_build(rsna_corpus, tmp_path / "m.json"))
    assert doc["numTraining"] + doc["numTest"] == len(rsna_corpus.series)


def json_doc(text: bytes) -> dict:
    import json

    return json.loads(text)


def test_cli_reports_files_per_second(run_cli, rsna_corpus, tmp_path):
    result = run_cli("manifest", "build", "--source", "rsna", "--root", rsna_corpus.root, "--out", tmp_path / "m.json",
                     "--folds", "2", "--workers", "1", "--no-cache")
    assert result.code == 0, result.out + result.err
    assert f"header scan: {rsna_corpus.n_files} file(s)" in result.out and "files/s" in result.out


def test_a_named_scheduler_is_used_even_for_a_few_files(run_cli, rsna_corpus, tmp_path):
    """A small folder is scanned in-process unless the user names a scheduler: then it must answer."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    out = tmp_path / "m.json"
    result = run_cli("manifest", "build", "--source", "rsna", "--root", rsna_corpus.root, "--out", out,
                     "--scheduler", address, "--connect-timeout", "1")
    assert result.code != 0 and address in result.err and "did not answer" in result.err
    assert "Traceback" not in result.err and not out.exists() and not (tmp_path / "m.links").exists()


def test_the_token_finder_finds_what_contains_token_finds():
    """One pass over many patients' tokens gives exactly the per-token search's answer."""
    from ichct.pipeline.manifests.model import TokenFinder, contains_token

    tokens = ["ID_5ca7ed00", "CQ500-CT-12", "CQ500-CT-1", "Doe John", "_x9", "--z", "ab", "Øvergård"]
    texts = ["../links/ID_5CA7ED00/x", "ID_5ca7ed001.dcm", "aID_5ca7ed00", "cq500-ct-12 cq500-ct-1", "cq500-ct-123",
             "mr doe john.", "_x9/", "a_x9", "q--z", "--zz", "ab", "Øvergård/1", "øVERGÅRD", "plain text", ""]
    finder = TokenFinder(tokens)
    for text in texts:
        assert finder.find(text) == contains_token(text, tokens), text


def test_schema_problems_are_those_of_the_plain_schema():
    """Plainly valid slice rows skip jsonschema; any other row is reported as the full validation reports it."""
    import jsonschema

    from ichct.pipeline.manifests import manifest_schema, schema_problems

    entry = {"image": "a", "ct_labels": dict.fromkeys(("any", "epidural", "intraparenchymal", "intraventricular",
                                                        "subarachnoid", "subdural"), 0),
             "patient_key": "0123456789abcdef", "study_uid": "1", "series_uid": "2"}
    valid = [[0, 1, -1, 0, 0, 1]] * 3
    rows_cases = [valid, [[0] * 5], [[True] + [0] * 5], [[1.0] + [0] * 5], [[2] + [0] * 5], "rows", [(0,) * 6]]
    for rows in rows_cases:
        doc = {"name": "m", "source": "rsna", "created_by": {"ichct_version": "1", "command": "c"},
               "salt_id": "0123456789ab", "num_folds": 2, "training": [dict(entry, fold=0, slice_labels=rows)],
               "test": [dict(entry, slice_labels=rows, fold=1)]}
        plain = jsonschema.validators.validator_for(manifest_schema())(manifest_schema())
        expected = sorted(f"schema: {'/'.join(map(str, e.absolute_path))}: "
                          + (e.message if len(e.message) <= 200 else e.message[:197] + "...") for e in plain.iter_errors(doc))
        got = sorted(schema_problems(doc))
        assert got == expected and got, (rows, got)
        del doc["test"][0]["fold"]
        assert (schema_problems(doc) == []) == plain.is_valid(doc) and (rows is not valid or plain.is_valid(doc)), rows


@pytest.fixture(scope="module")
def cq500_corpus(tmp_path_factory):
    from test_manifest_replicas import make_cq500

    return make_cq500(tmp_path_factory.mktemp("cq500") / "cq500")


def _build_cq500(corpus, out: Path, **kwargs) -> bytes:
    build_manifest("cq500", corpus.root, out, folds=2, test_fraction=0.5, seed=1, cache=False, command="test", **kwargs)
    return out.read_bytes()


def test_cq500_is_scanned_once_on_dask_with_the_same_manifest(cq500_corpus, tmp_path, monkeypatch):
    """CQ500's patient folders go through the same Dask header scan as RSNA: the same bytes with 2 workers
    as in this process, and neither the adapter nor the build's check reads a folder again."""
    import ichct.transforms.dicom as dicom

    reference = _build_cq500(cq500_corpus, tmp_path / "local" / "m.json")
    monkeypatch.setattr(scan_module, "BATCH_FILES", 3)
    monkeypatch.setattr(scan_module, "IN_PROCESS_BELOW", 0)
    monkeypatch.setattr(dicom, "scan_folder", lambda *a, **k: (_ for _ in ()).throw(AssertionError("scanned again")))
    seen = []
    with dask_client(ClusterSpec(workers=2)) as client:
        two = _build_cq500(cq500_corpus, tmp_path / "two" / "m.json", client=client, on_scan=seen.append)
    assert two == reference
    n_files = sum(1 for p in cq500_corpus.root.rglob("*") if p.is_file() and p.name != "reads.csv")
    assert seen[0].workers == 2 and seen[0].n_files == n_files > 0


def test_cq500_pixel_hashes_from_the_scan_equal_a_fresh_read(cq500_corpus):
    from ichct.pipeline.manifests import source_cq500
    from ichct.pipeline.manifests.hashing import dicom_series_digest
    from ichct.transforms.dicom import scan_folder

    records = source_cq500.collect(cq500_corpus.root)
    assert len(records) == 4
    for rec in records:
        files = rec.link_files or [h.path for h in scan_folder(rec.image).headers if h.series_uid == rec.series_uid]
        assert rec.pixel_hash == dicom_series_digest(files)
        assert rec.known_image.default_series == rec.series_uid


def test_csv_columns_read_as_the_dict_rows_read_them(tmp_path):
    """The fast column reader of RSNA's label CSV gives the dict reader's cells: BOM, padding, blank lines,
    short and long rows, a repeated column name, quoted commas."""
    from ichct.pipeline.manifests.source_common import iter_csv_columns, iter_csv_rows

    path = tmp_path / "labels.csv"
    path.write_text('\ufeff ID ,Label,ID\nID_1_any, 1 ,ID_x_any\n\nID_2_any\n"ID_3,q",0,ID_y,extra,more\n,,\n',
                    encoding="utf-8")
    expected = [(row.get("ID", ""), row.get("Label", "")) for row in iter_csv_rows(path, ("ID", "Label"))]
    assert list(iter_csv_columns(path, ("ID", "Label"))) == expected
    assert expected[0] == ("ID_x_any", "1")
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,Value\nID_1_any,1\n")
    with pytest.raises(Exception, match="missing column"):
        list(iter_csv_columns(bad, ("ID", "Label")))
