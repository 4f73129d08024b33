"""Slice-sequence classifier: a 2D CNN per axial slice, a bidirectional RNN along the slice axis.

Shapes follow MONAI's channel-first convention with the slices last, as in a ``(C, X, Y, Z)``
volume: a batch of studies is ``(B, C, H, W, S)``. Every slice goes through the same 2D encoder,
the ``S`` slice features of a study go through a bidirectional GRU or LSTM, and a linear head
gives one logit per slice and per label of :data:`LABEL_NAMES`.

Studies with different slice counts are batched with :func:`pad_slice_batch`; pass the returned
``lengths`` (or an equivalent ``slice_mask``) to the forward pass. Padding slices are never
encoded, the RNN runs on packed sequences (``torch.nn.utils.rnn.pack_padded_sequence``), so a
study gets the same logits padded in a batch as alone (in eval mode), and padding positions of
the output are set to 0.

This module imports only torch and MONAI (never another part of ``ichct``); no weights are
downloaded, every encoder starts from random initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.networks.nets import DenseNet121, EfficientNetBN, resnet10, resnet18
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = [
    "LABEL_NAMES",
    "SUBTYPES",
    "GlobalPool",
    "ENCODERS",
    "POOLINGS",
    "AUX_SEG_FUSIONS",
    "SliceSequenceClassifier",
    "seg_slice_stats",
    "pad_slice_batch",
    "lengths_to_mask",
]

#: Order of the per-slice outputs (RSNA 2019 label order): ``"any"``, then the five subtypes
#: (``ichct.pipeline.core.labels.LABEL_NAMES``, repeated because this package imports nothing of ichct).
LABEL_NAMES: tuple[str, ...] = (
    "any",
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)
#: Deprecated: the six labels under their old name, importable as before; use :data:`LABEL_NAMES`.
SUBTYPES: tuple[str, ...] = LABEL_NAMES

#: Names accepted by ``SliceSequenceClassifier(encoder=...)``.
ENCODERS: tuple[str, ...] = ("densenet121", "efficientnet-b0", "resnet18", "resnet10", "small", "small3d")

#: Global pooling of the encoder map into a slice feature: ``"avg"``, ``"max"`` or both concatenated.
POOLINGS: tuple[str, ...] = ("avg", "max", "avgmax")

#: How the auxiliary head joins its deep (encoder) and detail (slice) branches: ``"concat"``
#: (channels concatenated, then a 3x3 convolution) or ``"add"`` (summed, FPN-style; the fusing
#: convolution sees a third of the channels).
AUX_SEG_FUSIONS: tuple[str, ...] = ("concat", "add")

#: Number of statistics of the auxiliary blood map fed to the head when ``seg_to_head`` is on.
SEG_STATS = 3


# --------------------------------------------------------------------------------------------
# 2D encoders returning feature maps (N, out_channels, h, w)
# --------------------------------------------------------------------------------------------


class _DenseNetTrunk(nn.Module):
    """MONAI DenseNet121 (2D) without its classification layers."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        net = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=1, pretrained=False)
        self.features = net.features
        self.act = nn.ReLU()
        self.out_channels = int(net.class_layers.out.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.features(x))


class _EfficientNetTrunk(nn.Module):
    """MONAI EfficientNet-B0 (2D, random weights) up to its head convolution."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        net = EfficientNetBN(
            "efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=in_channels, num_classes=1
        )
        self.out_channels = int(net._fc.in_features)
        # pooling, dropout and the classifier are replaced by this model's own
        net._avg_pooling, net._dropout, net._fc = nn.Identity(), nn.Identity(), nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n._swish(n._bn0(n._conv_stem(n._conv_stem_padding(x))))
        x = n._blocks(x)
        return n._swish(n._bn1(n._conv_head(n._conv_head_padding(x))))


class _ResNetTrunk(nn.Module):
    """MONAI ResNet-18/10 (2D, stride-2 stem like the ImageNet ResNets) without pooling and fc."""

    def __init__(self, in_channels: int, depth: int) -> None:
        super().__init__()
        factory = {18: resnet18, 10: resnet10}[depth]
        net = factory(
            pretrained=False,
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            feed_forward=False,
        )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_channels = int(net.layer4[-1].conv2.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


def _conv_bn_relu(cin: int, cout: int, stride: int | tuple[int, ...] = 1, dims: int = 2) -> nn.Sequential:
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    return nn.Sequential(
        conv(cin, cout, 3, stride=stride, padding=1, bias=False),
        norm(cout),
        nn.ReLU(inplace=True),
    )


class _SmallTrunk(nn.Module):
    """Tiny CNN for CPU demos: four stride-2 stages of two 3x3 conv-BN-ReLU (total stride 16)."""

    #: 2: 2D convolutions; 3: 3D ones, stride 2 in plane and 1 along the last axis (the slices)
    dims = 2

    def __init__(self, in_channels: int, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        stride = 2 if self.dims == 2 else (2, 2, 1)
        stages: list[nn.Module] = []
        cin = in_channels
        for w in widths:
            stages.append(nn.Sequential(_conv_bn_relu(cin, w, stride=stride, dims=self.dims),
                                        _conv_bn_relu(w, w, dims=self.dims)))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.out_channels = int(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class _Small3DTrunk(_SmallTrunk):
    """The ``"small"`` CNN in 3D over a study's whole slice stack: a view across the slices.

    Four stages of two 3x3x3 conv-BN-ReLU, stride 2 in plane and 1 along the slices, so every
    slice keeps its own feature map while its receptive field reaches 8 slices each way. It takes
    and returns the 2D trunks' layout, one study's slices as the batch: ``(S, C, H, W)`` ->
    ``(S, out_channels, H / 16, W / 16)``; the slices are zero-padded at the study's ends.
    """

    dims = 3
    volumetric = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        volume = x.permute(1, 2, 3, 0)[None].contiguous()  # (1, C, H, W, S)
        return self.stages(volume)[0].permute(3, 0, 1, 2)


def _make_encoder(name: str, in_channels: int) -> nn.Module:
    if name == "densenet121":
        return _DenseNetTrunk(in_channels)
    if name == "efficientnet-b0":
        return _EfficientNetTrunk(in_channels)
    if name == "resnet18":
        return _ResNetTrunk(in_channels, 18)
    if name == "resnet10":
        return _ResNetTrunk(in_channels, 10)
    if name == "small":
        return _SmallTrunk(in_channels)
    if name == "small3d":
        return _Small3DTrunk(in_channels)
    raise ValueError(f"encoder must be one of {ENCODERS}, got {name!r}")


class _AuxSegHead(nn.Module):
    """Light 2D segmentation decoder.

    The deepest encoder feature map is reduced by a 1x1 convolution and up-sampled bilinearly,
    then fused (concatenated, or added with ``fusion="add"``) with a two-convolution branch on
    the slice itself, and a 3x3 convolution and a 1x1 one give the logits. The deep path makes the
    segmentation loss train the shared encoder; the shallow branch supplies the spatial detail
    that a stride-16/32 map lacks. With ``stride`` 2 the shallow branch and the fusion run at half
    the slice size and the logits are up-sampled bilinearly: about a quarter of the full-size
    cost, which at full size is several times that of the whole ``"small"`` encoder.
    """

    def __init__(self, enc_channels: int, in_channels: int, num_classes: int, width: int = 16,
                 stride: int = 1, fusion: str = "concat") -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"aux_seg_stride must be 1 or 2, got {stride}")
        if fusion not in AUX_SEG_FUSIONS:
            raise ValueError(f"aux_seg_fusion must be one of {AUX_SEG_FUSIONS}, got {fusion!r}")
        self.fusion = fusion
        deep_width = 2 * width if fusion == "concat" else width
        self.deep = nn.Sequential(
            nn.Conv2d(enc_channels, deep_width, 1, bias=False), nn.BatchNorm2d(deep_width), nn.ReLU(inplace=True)
        )
        self.shallow = nn.Sequential(_conv_bn_relu(in_channels, width, stride=stride), _conv_bn_relu(width, width))
        fuse_in = 3 * width if fusion == "concat" else width
        self.fuse = nn.Sequential(_conv_bn_relu(fuse_in, width), nn.Conv2d(width, num_classes, 1))

    def forward(self, fmap: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        detail = self.shallow(image)
        deep = nn.functional.interpolate(self.deep(fmap), size=detail.shape[-2:], mode="bilinear", align_corners=False)
        fused = torch.cat([deep, detail], dim=1) if self.fusion == "concat" else deep + detail
        logits = self.fuse(fused)
        if logits.shape[-2:] != image.shape[-2:]:
            logits = nn.functional.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return logits


class GlobalPool(nn.Module):
    """Global average, max, or both (concatenated along channels) pooling to ``(N, C')``.

    Average pooling suits findings that fill the slice; a small bleed of a few pixels is diluted
    by it, so max pooling (or both) keeps a local, strong response visible to the head.

    Parameters
    ----------
    mode
        One of :data:`POOLINGS`: ``"avg"``, ``"max"`` or ``"avgmax"`` (``C' = 2C``, averages first).

    Examples
    --------
    >>> GlobalPool("avgmax")(torch.ones(1, 3, 4, 4)).shape
    torch.Size([1, 6])
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
        self.mode = mode

    @property
    def factor(self) -> int:
        """Output channels per input channel (2 for ``"avgmax"``)."""
        return 2 if self.mode == "avgmax" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``x`` ``(N, C, H, W)`` over its last two axes."""
        if self.mode == "avg":
            return x.mean(dim=(-2, -1))
        if self.mode == "max":
            return x.amax(dim=(-2, -1))
        return torch.cat([x.mean(dim=(-2, -1)), x.amax(dim=(-2, -1))], dim=1)


def seg_slice_stats(seg_logits: torch.Tensor) -> torch.Tensor:
    """Per-slice statistics of the blood probability of an auxiliary segmentation.

    Parameters
    ----------
    seg_logits
        ``(N, K, H, W)`` logits; channel 0 is background, the others blood (any subtype).

    Returns
    -------
    torch.Tensor
        ``(N, 3)``: the maximum blood probability, the mean of the top 1 % of pixels, and
        ``log1p`` of the expected number of blood pixels (a soft area).

    Examples
    --------
    Equal logits give a blood probability of 0.5 on each of the 16 pixels (a soft area of 8):

    >>> import torch
    >>> from ichct.networks import seg_slice_stats
    >>> stats = seg_slice_stats(torch.zeros(2, 2, 4, 4))
    >>> stats.shape, [round(v, 4) for v in stats[0].tolist()]
    (torch.Size([2, 3]), [0.5, 0.5, 2.1972])
    """
    p = 1.0 - torch.softmax(seg_logits.float(), dim=1)[:, 0]  # (N, H, W)
    flat = p.flatten(1)
    top = max(1, flat.shape[1] // 100)
    return torch.stack(
        [flat.amax(dim=1), flat.topk(top, dim=1).values.mean(dim=1), torch.log1p(flat.sum(dim=1))], dim=1
    )


# --------------------------------------------------------------------------------------------
# Helpers for padded batches
# --------------------------------------------------------------------------------------------


def lengths_to_mask(lengths: torch.Tensor | Sequence[int], max_len: int | None = None) -> torch.Tensor:
    """Boolean mask ``(B, max_len)`` that is True on the first ``lengths[b]`` slices of study b.

    Parameters
    ----------
    lengths
        Number of valid slices per study.
    max_len
        Padded slice count (default ``max(lengths)``).

    Returns
    -------
    torch.Tensor
        Bool tensor on the device of ``lengths``.

    Examples
    --------
    >>> from ichct.networks import lengths_to_mask
    >>> lengths_to_mask([3, 1])
    tensor([[ True,  True,  True],
            [ True, False, False]])
    >>> lengths_to_mask([2], max_len=4).tolist()
    [[True, True, False, False]]
    """
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def pad_slice_batch(
    volumes: Sequence[torch.Tensor | np.ndarray], pad_value: float = 0.0, axis: int = -1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack studies with different slice counts into one zero-padded batch.

    Parameters
    ----------
    volumes
        Tensors or arrays of shape ``(C, H, W, S_i)``; all dimensions but ``axis`` must agree.
        ``axis`` can be changed to pad per-slice labels as well, e.g. ``(S_i, 6)`` with
        ``axis=0``.
    pad_value
        Value of the padding slices.
    axis
        The slice axis of each item.

    Returns
    -------
    batch : torch.Tensor
        ``(B, C, H, W, max S_i)`` (the items' shape with the slice axis padded, batch first).
    lengths : torch.Tensor
        ``(B,)`` int64 slice counts, to pass to :meth:`SliceSequenceClassifier.forward`.

    Examples
    --------
    >>> import torch
    >>> from ichct.networks import pad_slice_batch
    >>> batch, lengths = pad_slice_batch([torch.ones(1, 4, 4, 3), torch.ones(1, 4, 4, 5)])
    >>> batch.shape, lengths.tolist(), batch[0, ..., 3:].abs().sum().item()  # study 0 padded with 0
    (torch.Size([2, 1, 4, 4, 5]), [3, 5], 0.0)
    >>> labels, _ = pad_slice_batch([torch.ones(3, 6), torch.ones(5, 6)], axis=0)  # per-slice labels
    >>> labels.shape
    torch.Size([2, 5, 6])
    """
    if len(volumes) == 0:
        raise ValueError("pad_slice_batch needs at least one volume")
    items = [torch.as_tensor(v) for v in volumes]
    ndim = items[0].ndim
    ax = axis % ndim
    for i, t in enumerate(items):
        if t.ndim != ndim or t.shape[:ax] + t.shape[ax + 1 :] != items[0].shape[:ax] + items[0].shape[ax + 1 :]:
            raise ValueError(
                f"volume {i} has shape {tuple(t.shape)}, incompatible with {tuple(items[0].shape)} "
                f"(only axis {axis} may differ)"
            )
    lengths = torch.tensor([t.shape[ax] for t in items], dtype=torch.long)
    shape = list(items[0].shape)
    shape[ax] = int(lengths.max())
    batch = items[0].new_full((len(items), *shape), pad_value)
    for i, t in enumerate(items):
        batch[i].narrow(ax, 0, t.shape[ax]).copy_(t)
    return batch, lengths


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class SliceSequenceClassifier(nn.Module):
    """Per-slice hemorrhage classifier with context from the neighbouring slices.

    Parameters
    ----------
    in_channels
        Channels per slice (HU windows), 3 by default.
    num_classes
        Logits per slice; 6 = :data:`LABEL_NAMES` (``any`` first).
    encoder
        2D slice encoder: ``"densenet121"`` (MONAI DenseNet121), ``"efficientnet-b0"`` (MONAI
        EfficientNetBN, ``pretrained=False``), ``"resnet18"`` / ``"resnet10"`` (MONAI ResNet with
        a stride-2 stem), ``"small"`` (a ~0.3 M-parameter CNN for CPU demos) or ``"small3d"``
        (the same CNN in 3D over each study's whole slice stack, stride 1 along the slices, so a
        slice's feature sees 8 slices each way). All randomly initialised; nothing is downloaded.
    feature_dim
        Size of the per-slice feature (globally pooled encoder map, linear projection, ReLU).
    rnn
        ``"gru"`` or ``"lstm"``; always bidirectional, along the slice axis.
    rnn_hidden
        Hidden size per direction.
    rnn_layers
        Stacked RNN layers.
    neighbour_slices
        If True, slice k is encoded together with slices k-1 and k+1 (channels
        ``[prev, current, next]``, so the encoder sees ``3 * in_channels`` channels). The first
        and last slices of each study repeat themselves instead of reading padding.
    aux_seg
        Add the auxiliary 2D segmentation head (see :class:`_AuxSegHead`).
    num_seg_classes
        Output channels of the auxiliary head (2: background/blood; 6: with subtypes).
    dropout
        Dropout on the slice features and before the classification head.
    pooling
        Global pooling of the encoder map: ``"avg"``, ``"max"`` or ``"avgmax"`` (both,
        concatenated); see :data:`POOLINGS`.
    seg_to_head
        With ``aux_seg``: the slice's blood-map statistics (:func:`seg_slice_stats`) are appended
        to its feature before the RNN, so the classifier reads the segmentation evidence
        directly (the classification loss then trains the segmentation head as well).
    aux_seg_stride
        1: the auxiliary head's detail branch runs at the slice size; 2: at half of it, logits
        up-sampled (about 3x faster training of the whole model with the ``"small"`` encoder).
    aux_seg_fusion
        How the auxiliary head joins its deep and detail branches (:data:`AUX_SEG_FUSIONS`):
        ``"concat"`` (channels concatenated) or ``"add"`` (summed; the fusing 3x3 convolution
        reads a third of the channels, ~20 % less per training step of the CPU default model).
        The two layouts have different parameter shapes.

    Notes
    -----
    ``forward(x, lengths=None, slice_mask=None)`` takes ``x`` of shape ``(B, C, H, W, S)``.

    * Without ``aux_seg`` it returns the logits tensor ``(B, S, num_classes)``.
    * With ``aux_seg`` it returns a dict ``{"logits": (B, S, num_classes),
      "seg": (B, num_seg_classes, H, W, S), "mask": (B, S) bool}``.

    Padding positions (``s >= lengths[b]``) hold 0 in ``logits`` and ``seg``; losses must use the
    mask. The classification head sees the slice feature concatenated with the RNN context.

    Examples
    --------
    Two studies of 5 and 3 slices of 32 x 32 pixels, with the small CPU encoder:

    >>> import torch
    >>> from ichct.networks import SliceSequenceClassifier
    >>> _ = torch.manual_seed(0)
    >>> model = SliceSequenceClassifier(encoder="small", feature_dim=16, rnn_hidden=8).eval()
    >>> with torch.no_grad():
    ...     logits = model(torch.rand(2, 3, 32, 32, 5), lengths=[5, 3])
    >>> logits.shape, logits[1, 3:].abs().sum().item()  # (B, S, 6); padding slices hold 0
    (torch.Size([2, 5, 6]), 0.0)
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = len(LABEL_NAMES),
        encoder: str = "densenet121",
        feature_dim: int = 256,
        rnn: str = "gru",
        rnn_hidden: int = 128,
        rnn_layers: int = 1,
        neighbour_slices: bool = False,
        aux_seg: bool = False,
        num_seg_classes: int = 2,
        dropout: float = 0.2,
        pooling: str = "avg",
        seg_to_head: bool = False,
        aux_seg_stride: int = 1,
        aux_seg_fusion: str = "concat",
    ) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if rnn not in ("gru", "lstm"):
            raise ValueError(f"rnn must be 'gru' or 'lstm', got {rnn!r}")
        if min(in_channels, num_classes, feature_dim, rnn_hidden, rnn_layers) < 1:
            raise ValueError("in_channels, num_classes, feature_dim, rnn_hidden and rnn_layers must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if seg_to_head and not aux_seg:
            raise ValueError("seg_to_head needs aux_seg=True (the statistics come from the auxiliary head)")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder_name = encoder
        self.feature_dim = feature_dim
        self.neighbour_slices = neighbour_slices
        self.aux_seg = aux_seg
        self.pooling = pooling
        self.seg_to_head = seg_to_head
        enc_in = 3 * in_channels if neighbour_slices else in_channels

        self.encoder = _make_encoder(encoder, enc_in)
        pool = GlobalPool(pooling)
        self.project = nn.Sequential(
            pool,
            nn.Flatten(),  # no-op on (N, C); keeps the state-dict keys of the avg-pool layout
            nn.Dropout(dropout),
            nn.Linear(pool.factor * self.encoder.out_channels, feature_dim),
            nn.ReLU(inplace=True),
        )
        slice_dim = feature_dim + (SEG_STATS if seg_to_head else 0)
        self.slice_dim = slice_dim
        rnn_cls = nn.GRU if rnn == "gru" else nn.LSTM
        self.rnn = rnn_cls(
            slice_dim,
            rnn_hidden,
            num_layers=rnn_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if rnn_layers > 1 else 0.0,
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(slice_dim + 2 * rnn_hidden, num_classes))
        self.aux_seg_stride = int(aux_seg_stride)
        self.aux_seg_fusion = aux_seg_fusion
        self.seg_head = (_AuxSegHead(self.encoder.out_channels, enc_in, num_seg_classes, stride=self.aux_seg_stride,
                                     fusion=aux_seg_fusion)
                         if aux_seg else None)
        for conv in (m for m in self.modules() if isinstance(m, nn.Conv2d)):
            conv.to(memory_format=torch.channels_last)  # 2D conv weights; the rest is unaffected

    # ---------------------------------------------------------------------------------------
    def _lengths(
        self,
        batch: int,
        slices: int,
        lengths: torch.Tensor | Sequence[int] | None,
        slice_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Validated int64 CPU lengths from ``lengths`` and/or a prefix ``slice_mask``."""
        out: torch.Tensor | None = None
        if slice_mask is not None:
            m = torch.as_tensor(slice_mask).to(device="cpu", dtype=torch.bool)
            if m.shape != (batch, slices):
                raise ValueError(f"slice_mask must have shape {(batch, slices)}, got {tuple(m.shape)}")
            out = m.sum(dim=1)
            if not torch.equal(m, lengths_to_mask(out, slices)):
                raise ValueError("slice_mask must mark a prefix of the slices of each study (padding at the end)")
        if lengths is not None:
            ln = torch.as_tensor(lengths).to(device="cpu", dtype=torch.long).reshape(-1)
            if ln.shape != (batch,):
                raise ValueError(f"lengths must have {batch} entries, got {tuple(ln.shape)}")
            if out is not None and not torch.equal(out, ln):
                raise ValueError("lengths and slice_mask disagree")
            out = ln
        if out is None:
            return torch.full((batch,), slices, dtype=torch.long)
        if int(out.min()) < 1 or int(out.max()) > slices:
            raise ValueError(f"every study needs between 1 and {slices} slices, got lengths {out.tolist()}")
        return out

    @staticmethod
    def _stack_neighbours(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, S, C, H, W)`` -> ``(B, S, 3C, H, W)`` with channels ``[k-1, k, k+1]`` per slice."""
        b, s = seq.shape[:2]
        idx = torch.arange(s, device=seq.device)
        last = (lengths.to(seq.device) - 1)[:, None]
        prev = (idx - 1).clamp(min=0)[None, :].expand(b, s)
        nxt = torch.minimum(idx[None, :] + 1, last).clamp(min=0)
        rows = torch.arange(b, device=seq.device)[:, None]
        return torch.cat([seq[rows, prev], seq, seq[rows, nxt]], dim=2)

    def _encode(self, valid: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder maps of the valid slices; a volumetric encoder sees each study's stack on its own."""
        if not getattr(self.encoder, "volumetric", False) or len(lengths) == 1:
            return self.encoder(valid)  # one study (inference): a traced graph not tied to its slice count
        return torch.cat([self.encoder(study) for study in valid.split(lengths.tolist())])

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
        slice_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Per-slice logits for a batch of studies.

        Parameters
        ----------
        x
            ``(B, C, H, W, S)`` batch; studies shorter than ``S`` are padded at the end.
        lengths
            ``(B,)`` valid slice counts (default: all ``S`` slices valid).
        slice_mask
            ``(B, S)`` bool, True on valid slices; an alternative to ``lengths`` (must mark a
            prefix of each study).

        Returns
        -------
        torch.Tensor or dict
            ``(B, S, num_classes)`` logits; with ``aux_seg`` a dict with keys ``"logits"``,
            ``"seg"`` ``(B, num_seg_classes, H, W, S)`` and ``"mask"`` ``(B, S)``.
        """
        if x.ndim != 5:
            raise ValueError(f"x must be (B, C, H, W, S), got shape {tuple(x.shape)}")
        b, c, h, w, s = x.shape
        if c != self.in_channels:
            raise ValueError(f"x has {c} channels, the model expects {self.in_channels}")
        lens = self._lengths(b, s, lengths, slice_mask)
        mask = lengths_to_mask(lens, s).to(x.device)

        seq = x.permute(0, 4, 1, 2, 3)  # (B, S, C, H, W)
        if self.neighbour_slices:
            seq = self._stack_neighbours(seq, lens)
        # (n_valid, C', H, W): padding slices are never encoded. Channels-last is the layout the
        # CPU (oneDNN) and GPU convolution kernels run fastest on (~25 % per step on CPU here).
        valid = seq[mask].contiguous(memory_format=torch.channels_last)
        fmap = self._encode(valid, lens)
        feats_valid = self.project(fmap)
        seg_valid = self.seg_head(fmap, valid) if self.seg_head is not None else None  # (n_valid, K, H, W)
        if self.seg_to_head:
            feats_valid = torch.cat([feats_valid, seg_slice_stats(seg_valid).to(feats_valid.dtype)], dim=1)
        feats = feats_valid.new_zeros(b, s, self.slice_dim)
        feats[mask] = feats_valid

        packed = pack_padded_sequence(feats, lens, batch_first=True, enforce_sorted=False)
        ctx, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=s)
        logits = self.head(torch.cat([feats, ctx], dim=-1))
        logits = logits.masked_fill(~mask[..., None], 0.0)
        if self.seg_head is None:
            return logits

        seg = seg_valid.new_zeros(b, s, *seg_valid.shape[1:])
        seg[mask] = seg_valid
        return {"logits": logits, "seg": seg.permute(0, 2, 3, 4, 1), "mask": mask}

    def extra_repr(self) -> str:
        return (f"encoder={self.encoder_name!r}, pooling={self.pooling!r}, neighbour_slices={self.neighbour_slices}, "
                f"aux_seg={self.aux_seg}, aux_seg_stride={self.aux_seg_stride}, "
                f"aux_seg_fusion={self.aux_seg_fusion!r}, seg_to_head={self.seg_to_head}")

