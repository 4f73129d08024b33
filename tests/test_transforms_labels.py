"""The transforms the bundles' configs name since every step became its own entry: training labels,
the label checks, the in-plane crop, and the refusal of values that would preprocess wrongly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ichct.errors import InputError
from ichct.transforms import (
    BloodLabels,
    BloodLabelsd,
    CheckSameGridd,
    CheckSliceCountd,
    CropHead,
    InPlaneHeadCrop,
    InPlaneHeadCropd,
    MultiWindow,
    ResampleToSpacing,
    ResampleToSpacingd,
)


def _head(shape=(1, 40, 36, 5), spacing=(1.0, 1.0, 5.0)) -> MetaTensor:
    """Air, a 2-voxel skull and brain inside it (40 HU), off-centre so the box is not the whole image."""
    hu = torch.full(shape, -1000.0)
    hu[0, 6:30, 4:28] = 1000.0
    hu[0, 8:28, 6:26] = 40.0
    return MetaTensor(hu, affine=torch.diag(torch.tensor([*spacing, 1.0])), meta={"filename_or_obj": "ct.nii.gz"})


def test_blood_labels_map_subtypes_to_the_models_classes():
    labels = MetaTensor(torch.tensor([[[[0.0, 1.0, 2.0, 5.0, 7.0]]]]))
    two, six = BloodLabels(2)(labels), BloodLabels(6)(labels)
    assert two.dtype == six.dtype == torch.float32 and isinstance(two, MetaTensor)
    assert two.flatten().tolist() == [0.0, 1.0, 1.0, 1.0, 1.0] and six.flatten().tolist() == [0, 1, 2, 5, 5]
    assert BloodLabelsd("label", 2)({"label": np.array([[0, 3]])})["label"].tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="num_classes"):
        BloodLabels(3)


def test_label_checks_name_the_file():
    img = _head()
    CheckSliceCountd()({"image": img, "slice_labels": np.zeros((5, 6))})
    with pytest.raises(InputError, match=r"ct\.nii\.gz: 5 slices but 4 slice-label rows"):
        CheckSliceCountd()({"image": img, "slice_labels": np.zeros((4, 6))})
    CheckSameGridd()({"image": img, "label": torch.zeros(1, 40, 36, 5)})
    with pytest.raises(InputError, match=r"label grid \(40, 36, 4\) differs"):
        CheckSameGridd()({"image": img, "label": torch.zeros(1, 40, 36, 4)})
    with pytest.raises(ValueError, match="two keys"):
        CheckSameGridd(["image"])


def test_in_plane_crop_is_the_head_box_on_the_in_plane_axes_only():
    img = _head()
    box_start, box_end = CropHead(margin_mm=1.0).compute_bounding_box(img)
    out = InPlaneHeadCrop(margin_mm=1.0)(img)
    assert tuple(out.shape) == (1, int(box_end[0] - box_start[0]), int(box_end[1] - box_start[1]), 5)
    assert torch.equal(out, img[:, box_start[0]:box_end[0], box_start[1]:box_end[1], :])
    label = torch.arange(40 * 36 * 5, dtype=torch.float32).reshape(1, 40, 36, 5)
    d = InPlaneHeadCropd(["image", "label"], margin_mm=1.0)({"image": img, "label": label})
    assert torch.equal(d["label"], label[:, box_start[0]:box_end[0], box_start[1]:box_end[1], :])
    # a box smaller than min_size (here: no head at all) leaves the image whole
    air = MetaTensor(torch.full((1, 20, 20, 3), -1000.0))
    assert InPlaneHeadCrop()(air).shape == air.shape
    assert InPlaneHeadCropd("image", min_size=30, margin_mm=0.0)({"image": img})["image"].shape == img.shape


@pytest.mark.parametrize("make, message", [
    (lambda: MultiWindow({"brain": [40.0]}), "window 'brain': expected \\[level, width\\]"),
    (lambda: MultiWindow({"brain": 40.0}), "window 'brain'"),
    (lambda: MultiWindow({"brain": [40.0, -80.0]}), "width must be positive"),
    (lambda: ResampleToSpacing([2.0, 0.0, 3.0]), "spacing_mm must be positive"),
    (lambda: ResampleToSpacingd("image", spacing_mm="abc"), "spacing_mm must be positive"),
    (lambda: CropHead(margin_mm=-1.0), "margin_mm must be numbers >= 0"),
    (lambda: CropHead(mode="brian"), "mode must be 'brain' or 'head'"),
    (lambda: InPlaneHeadCrop(min_size=0), "min_size"),
])
def test_values_that_would_preprocess_wrongly_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
