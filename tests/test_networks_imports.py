"""``ichct.networks`` depends on torch/MONAI/NumPy only; ``ichct.pipeline.decision`` not on torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

# torchvision is blocked: the test extra's nnunetv2 installs one (through timm) that cannot import beside
# the CPU torch wheel, and MONAI's optional import of it would leave half-imported modules behind. The
# networks must build and run without it; any import of it fails loudly here.
_NETWORKS_SNIPPET = """
import sys
sys.modules["torchvision"] = None
import json, torch
import ichct.networks as n
from ichct.networks import ich_unet3d, sliding_window_predict, SliceSequenceClassifier, pad_slice_batch
for e in n.ENCODERS:
    SliceSequenceClassifier(encoder=e, aux_seg=True)(torch.zeros(1, 3, 32, 32, 2))
sliding_window_predict(ich_unet3d(), torch.zeros(3, 16, 16, 8), roi_size=16)
print(json.dumps(sorted(m for m, mod in sys.modules.items() if mod is not None and m.split('.')[0] in ('ichct', 'torchvision'))))
"""

_DECISION_SNIPPET = """
import json, sys
import ichct.pipeline.decision
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'ichct'))))
"""


def _modules(snippet: str) -> list[str]:
    env = dict(os.environ, MPLCONFIGDIR=tempfile.mkdtemp(prefix="ichct-mpl-"))
    proc = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, env=env, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_networks_import_nothing_else_of_ichct() -> None:
    mods = _modules(_NETWORKS_SNIPPET)
    assert "ichct.networks.unet3d" in mods and "ichct.networks.slice_sequence" in mods
    others = [m for m in mods if m != "ichct" and not m.startswith("ichct.networks")]
    assert not others, others  # no ichct.pipeline / ichct.transforms, and no torchvision


def test_decision_module_is_numpy_only() -> None:
    # the label vocabulary, through the light core package (its exports load lazily), and the decision
    # package's own modules
    mods = _modules(_DECISION_SNIPPET)
    assert [m for m in mods if not m.startswith("ichct.pipeline.decision.")] == [
        "ichct", "ichct.pipeline", "ichct.pipeline.core", "ichct.pipeline.core.exports", "ichct.pipeline.core.labels",
        "ichct.pipeline.decision"]
    assert "ichct.pipeline.decision.rule" in mods
