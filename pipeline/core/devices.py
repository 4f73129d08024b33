"""The compute device a stage runs on, checked before any work starts."""

from __future__ import annotations

import torch

from ichct.errors import InputError


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` (``"cpu"``, ``"cuda"`` or ``"cuda:N"``) as a :class:`torch.device`.

    Raises
    ------
    InputError
        (a ``ValueError``) For another kind of device, or a CUDA device this machine does not have (no GPU, or a
        CPU-only build of torch), so that a stage asked for the GPU stops at once with a message
        instead of failing halfway with torch's own error.
    """
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"device must be cpu, cuda or cuda:N, got {device!r}") from exc
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise InputError(f"device {device!r}: CUDA is not available on this machine (torch {torch.__version__}, "
                             f"{build}); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(f"device {device!r}: this machine has {count} CUDA device(s)")
    return dev
