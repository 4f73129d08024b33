"""Deprecated module path of :class:`ichct.pipeline.bundle.network.ChannelFirstSliceClassifier`.

The published classification bundle's ``configs/inference.json`` names it here (``network_def``).
"""

from ichct.pipeline.bundle.network import ChannelFirstSliceClassifier  # noqa: F401 - re-exported
