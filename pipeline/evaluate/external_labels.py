"""Which value of another tool's label map means which hemorrhage label (``ichct evaluate --label-map``).

A :class:`LabelMap` maps the integer values of a predicted label map (a NIfTI's voxel values, or a
DICOM SEG's segment numbers) to ``"background"``, ``"any"`` (blood of no stated subtype) or one of
the five subtypes. :meth:`LabelMap.apply` turns a predicted map into ichct's convention: binary
(0 background, 1 blood) when every value means ``any``, else ichct's subtype values (1 epidural ...
5 subdural, :data:`~ichct.pipeline.core.labels.LABEL_VALUES`). A map cannot mix ``any`` with
subtypes (a subtype map has no value for blood of unknown subtype). Value 0 is always background.

:func:`parse_label_map` reads what a user writes:

* ``"1=any"`` or ``"1=epidural,2=intraparenchymal,3=intraventricular"`` (value=name pairs);
* ``"ichct"`` (ichct's values 1-5) or ``"binary"`` (``1=any``);
* a JSON file: ``{"1": "epidural", ...}`` (value -> name), ``{"epidural": 1, ...}`` (name -> value,
  as nnU-Net's ``dataset.json`` ``labels``), or a document holding such a ``labels`` object
  (``dataset.json``, ``ichct_case_map.json``).

Names are matched without case; ``hemorrhage``, ``blood``, ``ich`` and the like mean ``any``, and a
trailing ``hemorrhage`` is dropped (``"Epidural hemorrhage"`` is ``epidural``, ``"Intracranial
hemorrhage"`` is ``any``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ichct.errors import InputError
from ichct.pipeline.core.labels import LABEL_VALUES, SUBTYPES

__all__ = ["BINARY", "ICHCT", "LabelMap", "label_name", "label_map_from_names", "parse_label_map"]

BACKGROUND = "background"
ANY = "any"
#: Names that mean blood of any subtype.
ANY_ALIASES = frozenset({"any", "hemorrhage", "haemorrhage", "blood", "ich", "bleed", "bleeding", "hematoma",
                         "haematoma", "intracranial", "intracranial hemorrhage", "intracranial haemorrhage",
                         "foreground", "lesion"})
BACKGROUND_ALIASES = frozenset({"background", "bg", "none", "normal"})
SHOWN = 8  # values listed in an error message


def label_name(text: Any) -> str | None:
    """ichct's name for a label name another tool uses, or None when it is not one.

    Examples
    --------
    >>> label_name("Epidural hemorrhage"), label_name("ICH"), label_name("BG"), label_name("tumour")
    ('epidural', 'any', 'background', None)
    """
    name = " ".join(str(text).strip().lower().replace("_", " ").split())
    for candidate in (name, name.removesuffix(" hemorrhage").removesuffix(" haemorrhage")):
        if candidate in BACKGROUND_ALIASES:
            return BACKGROUND
        if candidate in ANY_ALIASES:
            return ANY
        if candidate in SUBTYPES:
            return candidate
    return None


@dataclass(frozen=True)
class LabelMap:
    """Values of a predicted label map -> ``"background"``, ``"any"`` or a subtype.

    Examples
    --------
    >>> m = parse_label_map("1=epidural,2=subdural")
    >>> m.num_classes, m.apply(np.array([0, 1, 2, 2]), "pred.nii.gz").tolist()
    (6, [0, 1, 5, 5])
    >>> BINARY.apply(np.array([0, 1, 1]), "pred.nii.gz").tolist(), BINARY.num_classes
    ([0, 1, 1], 2)
    """

    values: Mapping[int, str]
    source: str

    def __post_init__(self) -> None:
        names = {n for n in self.values.values() if n != BACKGROUND}
        if not names:
            raise InputError(f"label map ({self.source}): no value means blood")
        if ANY in names and len(names) > 1:
            raise InputError(f"label map ({self.source}): 'any' cannot be mixed with subtypes "
                             f"({', '.join(sorted(names - {ANY}))}); map every blood value to 'any' or each to a subtype")
        if self.values.get(0, BACKGROUND) != BACKGROUND:
            raise InputError(f"label map ({self.source}): value 0 must be background")

    @property
    def num_classes(self) -> int:
        """2 (background / any blood) or 6 (background + the five subtypes), as ichct's segmenters."""
        return 2 if ANY in self.values.values() else len(SUBTYPES) + 1

    def describe(self) -> dict[str, str]:
        """``{value: name}`` as JSON-ready strings."""
        return {str(v): n for v, n in sorted(self.values.items())}

    def apply(self, labels: np.ndarray, path: str | Path) -> np.ndarray:
        """``labels`` in ichct's values (uint8); an :class:`~ichct.errors.InputError` naming ``path``
        for a value that is not an integer or not in the map."""
        arr = np.asarray(labels)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if not np.issubdtype(arr.dtype, np.number):
            raise InputError(path, f"label map of type {arr.dtype}, not numbers")
        present = _values_present(arr)
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(present) & (present == np.rint(present))):
            bad = [float(v) for v in present if not (np.isfinite(v) and v == np.rint(v))]
            raise InputError(path, f"label map with values that are not integers ({bad[:SHOWN]}): "
                                   "give labels, not probabilities")
        unknown = [int(v) for v in present if int(v) != 0 and int(v) not in self.values]
        if unknown:
            where = np.argwhere(arr == unknown[0])[0].tolist()
            raise InputError(path, f"label value(s) {unknown[:SHOWN]} outside the label map {self.describe()} "
                                   f"({self.source}; value {unknown[0]} first at voxel {where}); say what each "
                                   "value means with --label-map")
        out = np.zeros(arr.shape, dtype=np.uint8)
        for value, name in self.values.items():
            if name != BACKGROUND and value in present:
                out[arr == value] = 1 if name == ANY else LABEL_VALUES[name]
        return out


def _values_present(arr: np.ndarray) -> np.ndarray:
    """The distinct values of ``arr`` (a count per value for small non-negative integers: faster
    than sorting a large volume)."""
    if np.issubdtype(arr.dtype, np.integer) and arr.size and 0 <= int(arr.min()) and int(arr.max()) < 1 << 16:
        return np.flatnonzero(np.bincount(arr.ravel()))
    return np.unique(arr)


BINARY = LabelMap({1: ANY}, "binary: 1 = any blood")
ICHCT = LabelMap({v: n for n, v in LABEL_VALUES.items()}, "ichct values 1-5")


def label_map_from_names(pairs: Mapping[Any, Any], source: str) -> LabelMap:
    """A :class:`LabelMap` from ``{value: name}`` or ``{name: value}`` pairs (either direction,
    values as integers or their text).

    Examples
    --------
    >>> label_map_from_names({"background": 0, "hemorrhage": 1}, "dataset.json").values
    {0: 'background', 1: 'any'}
    """
    values: dict[int, str] = {}
    for key, val in pairs.items():
        value, name = (key, val) if _is_int(key) else (val, key)
        if not _is_int(value):
            raise InputError(f"label map ({source}): {key!r}: {val!r} pairs no integer value with a name "
                             "(e.g. \"1\": \"epidural\" or \"epidural\": 1)")
        meaning = label_name(name)
        if meaning is None:
            raise InputError(f"label map ({source}): unknown label name {name!r}; use background, any or one of "
                             f"{', '.join(SUBTYPES)}")
        if int(value) in values and values[int(value)] != meaning:
            raise InputError(f"label map ({source}): value {int(value)} given twice")
        values[int(value)] = meaning
    return LabelMap(values, source)


def _is_int(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    return isinstance(x, str) and x.strip().lstrip("-").isdigit()


def parse_label_map(spec: str | Path) -> LabelMap:
    """The label map a user gives (see the module): pairs, ``ichct``/``binary`` or a JSON file.

    Examples
    --------
    >>> parse_label_map("1=any").values, parse_label_map("ichct").num_classes
    ({1: 'any'}, 6)
    """
    text = str(spec).strip()
    if text.lower() == "binary":
        return BINARY
    if text.lower() == "ichct":
        return ICHCT
    path = Path(text)
    if path.is_file():
        return _label_map_file(path)
    if "=" not in text:
        raise InputError(f"--label-map {text!r}: neither VALUE=NAME pairs (e.g. 1=any), 'ichct', 'binary' nor a file")
    pairs: dict[str, str] = {}
    for part in text.split(","):
        value, sep, name = part.partition("=")
        if not sep or not value.strip() or not name.strip():
            raise InputError(f"--label-map {text!r}: {part!r} is not VALUE=NAME")
        pairs[value.strip()] = name.strip()
    return label_map_from_names(pairs, f"--label-map {text}")


def _label_map_file(path: Path) -> LabelMap:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"not a JSON label map ({exc})") from None
    if isinstance(doc, Mapping) and isinstance(doc.get("labels"), Mapping):
        doc = doc["labels"]
    if not isinstance(doc, Mapping) or not doc:
        raise InputError(path, "a label map is a JSON object of value: name pairs (or a document with 'labels')")
    if any(isinstance(v, (list, dict)) for v in doc.values()):
        raise InputError(path, "label map with region (list) values: ichct reads one value per label")
    try:
        return label_map_from_names(doc, str(path))
    except InputError as exc:
        raise InputError(path, exc.reason) from None
