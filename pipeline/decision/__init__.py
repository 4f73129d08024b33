"""Volume-level decisions: from per-slice probabilities or a segmentation to one call per CT.

Every rule gives a CT-level **score** per subtype and calls the CT positive for that subtype when
``score >= threshold``. The scores are therefore directly usable for ROC analysis, and a threshold
chosen on validation scores (:func:`choose_threshold`) reproduces its operating point exactly.

Rules on slice probabilities ``(N, 6)`` (columns in :data:`LABEL_NAMES` order, ``N`` slices in
anatomical order):

``max``
    Score = highest slice probability.
``topk_mean``
    Score = mean of the ``k`` highest slice probabilities (all slices when ``N < k``).
``consecutive``
    Positive when at least ``k`` *adjacent* slices have ``p >= threshold``. Score = the maximum,
    over all windows of ``k`` adjacent slices, of the minimum probability in the window. For every
    threshold ``t > 0``: ``score >= t`` if and only if some ``k`` adjacent slices all pass ``t``
    (a run of >= k passing slices contains such a window; conversely a window whose minimum is
    >= t is such a run). A CT with fewer than ``k`` slices has no such window: its score is 0 and it
    is negative at every valid threshold.

Rule on a segmentation:

``seg_volume``
    Connected components (:func:`scipy.ndimage.label`) smaller than ``min_component_ml`` are
    removed, per subtype label and for any blood (the union of all labels > 0, whose components
    are formed across subtypes); score = remaining blood volume in mL; positive when the volume
    reaches the threshold (``>=``, threshold in mL, > 0).

``seg_peak``
    Score = the segmenter's highest probability of the label, each voxel's probability first
    averaged over its 3 x 3 x 3 neighbourhood of the model grid (:func:`peak_probability_scores`;
    ``any``: 1 - p(background)). Unlike the volume it does not tie every study without a kept
    component at 0 mL, so it ranks the studies the segmenter is unsure of.

Rule on both models at once:

``fused``
    Score = the mean of the classifier's ``consecutive`` score (with the rule's ``k``) and the
    segmenter's ``seg_peak`` score, per label both score (``any`` only with a binary segmenter;
    :func:`fused_scores`). The two models miss different studies (the classifier thin collections
    against the bone, the segmenter faint small ones), so the mean ranks studies better than
    either alone. Its threshold, unless chosen on data, is the mean of the two rules' thresholds
    (:func:`fused_threshold`).

Thresholds of the slice rules, ``seg_peak`` and ``fused`` lie in ``(0, 1]`` (0 would call every CT positive), those of
``seg_volume`` are > 0 mL; probabilities must lie in ``[0, 1]`` and NaN is rejected with a
``ValueError``. The :class:`DecisionRule` holds the rule name, its parameters and its
threshold(s) (one for all subtypes or one per subtype) and round-trips through JSON so it can
be stored next to a model.

Modules, one concept each (every name below is importable from this package):

* ``names`` - the rule names (:data:`RULES` and its groups) and :func:`models_needed`;
* ``checks`` - the input checks the rules share (slice probabilities, ``k``, a threshold);
* ``slice_rules`` - ``max``, ``topk_mean``, ``consecutive`` on slice probabilities;
* ``volumes`` - voxel volumes, small components, :func:`segmentation_volumes` (``seg_volume``);
* ``peak`` - :func:`peak_probability_scores` (``seg_peak``);
* ``rule`` - :class:`DecisionRule` and its JSON form;
* ``fused`` - :func:`fused_scores` and :func:`fused_threshold` (``fused``);
* ``ct_call`` - one call per CT: :func:`ct_scores`, :func:`decide`, :func:`decide_scores`;
* ``thresholds`` - :func:`choose_threshold`, :func:`choose_thresholds`, :func:`probability_threshold`.

Pure NumPy/SciPy; nothing here imports torch.
"""

from __future__ import annotations

from ichct.pipeline.core.labels import LABEL_NAMES
from ichct.pipeline.decision.ct_call import ct_scores, decide, decide_scores
from ichct.pipeline.decision.fused import fused_scores, fused_threshold
from ichct.pipeline.decision.names import (
    PAIR_RULES,
    PROBABILITY_MAP_RULES,
    RULES,
    SEG_RULES,
    SLICE_RULES,
    UNCALIBRATED_RULES,
    models_needed,
)
from ichct.pipeline.decision.peak import peak_probability_scores
from ichct.pipeline.decision.rule import DecisionRule
from ichct.pipeline.decision.slice_rules import (
    consecutive_call,
    consecutive_score,
    max_score,
    slice_scores,
    topk_mean_score,
)
from ichct.pipeline.decision.thresholds import choose_threshold, choose_thresholds, probability_threshold
from ichct.pipeline.decision.volumes import (
    affine_voxel_volume_ml,
    remove_small_components,
    segmentation_volumes,
    voxel_volume_ml,
)

__all__ = [
    "LABEL_NAMES",
    "RULES",
    "SLICE_RULES",
    "SEG_RULES",
    "PROBABILITY_MAP_RULES",
    "DecisionRule",
    "max_score",
    "topk_mean_score",
    "consecutive_score",
    "consecutive_call",
    "slice_scores",
    "voxel_volume_ml",
    "affine_voxel_volume_ml",
    "remove_small_components",
    "segmentation_volumes",
    "peak_probability_scores",
    "PAIR_RULES",
    "UNCALIBRATED_RULES",
    "fused_scores",
    "fused_threshold",
    "models_needed",
    "ct_scores",
    "decide",
    "decide_scores",
    "choose_threshold",
    "choose_thresholds",
    "probability_threshold",
]

# LABEL_NAMES (from ichct.pipeline.core.labels) is the column order of slice probabilities: "any" + the
# five subtypes; segmentation label i (1..5) of a 6-class map is LABEL_NAMES[i], label 1 of a
# binary map "any".

#: Deprecated: the six labels, importable here as before; use :data:`LABEL_NAMES`
#: (``SUBTYPES`` of :mod:`ichct.pipeline.core.labels` is the five subtypes without ``"any"``).
SUBTYPES: tuple[str, ...] = LABEL_NAMES
