"""Slice-sequence classifier: encoders, padding/masking, gradients, auxiliary segmentation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from ichct.networks import ENCODERS, LABEL_NAMES, SliceSequenceClassifier, lengths_to_mask, pad_slice_batch


def _studies(lengths: list[int], c: int = 3, hw: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(c, hw, hw, n, generator=g) for n in lengths]


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_subtype_order() -> None:
    assert LABEL_NAMES == ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")


@pytest.mark.parametrize("encoder", ENCODERS)
def test_output_shape_per_encoder(encoder: str) -> None:
    torch.manual_seed(0)
    model = SliceSequenceClassifier(encoder=encoder).eval()
    x = torch.randn(2, 3, 64, 64, 7)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 7, 6)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    "encoder, rnn, neighbours",
    [
        ("small", "gru", False),
        ("small", "lstm", True),
        ("resnet10", "gru", True),
        ("resnet18", "lstm", False),
        ("efficientnet-b0", "gru", False),
        ("densenet121", "lstm", True),
        ("small3d", "gru", True),
        ("small3d", "lstm", False),
    ],
)
def test_padded_batch_gives_same_logits_as_single_study(encoder: str, rnn: str, neighbours: bool) -> None:
    """Masking works: padding never reaches the encoder, the RNN context, or the output."""
    torch.manual_seed(0)
    model = SliceSequenceClassifier(encoder=encoder, rnn=rnn, neighbour_slices=neighbours, rnn_layers=2).eval()
    studies = _studies([9, 5, 12])
    batch, lengths = pad_slice_batch(studies)
    assert batch.shape == (3, 3, 64, 64, 12) and lengths.tolist() == [9, 5, 12]
    # garbage in the padding must not matter either
    garbage = batch.clone()
    for i, n in enumerate(lengths.tolist()):
        garbage[i, ..., n:] = 1e3 * torch.randn_like(garbage[i, ..., n:])
    with torch.no_grad():
        padded = model(batch, lengths=lengths)
        noisy = model(garbage, lengths=lengths)
        alone = [model(s[None])[0] for s in studies]
    assert padded.shape == (3, 12, 6)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(padded[i, :n], alone[i], atol=2e-5, rtol=1e-4)
        assert torch.all(padded[i, n:] == 0)
    torch.testing.assert_close(noisy, padded, atol=0, rtol=0)


@pytest.mark.parametrize("encoder, reach", [("small", 0), ("small3d", 8)])
def test_a_volumetric_encoder_sees_neighbouring_slices_within_its_reach(encoder: str, reach: int) -> None:
    """A slice's encoder map changes with slices up to ``reach`` away, and not with farther ones."""
    torch.manual_seed(0)
    model = SliceSequenceClassifier(encoder=encoder, in_channels=3).eval()
    stack = torch.randn(20, 3, 32, 32)  # (S, C, H, W): one study's slices, the encoders' layout
    with torch.no_grad():
        base = model.encoder(stack)
        for distance in sorted({1, max(reach, 1), reach + 1}):
            changed = stack.clone()
            changed[10 + distance] += 1.0
            moved = (model.encoder(changed)[10] - base[10]).abs().max().item()
            assert (moved > 1e-6) == (distance <= reach), (distance, moved)


def test_without_masking_padding_would_leak() -> None:
    """Control for the test above: treating padding as slices changes the valid slices' logits."""
    torch.manual_seed(0)
    model = SliceSequenceClassifier(encoder="small").eval()
    batch, lengths = pad_slice_batch(_studies([4, 8]))
    with torch.no_grad():
        masked = model(batch, lengths=lengths)[0, :4]
        unmasked = model(batch)[0, :4]
    assert not torch.allclose(masked, unmasked, atol=1e-4)


def test_slice_mask_equivalent_to_lengths_and_validated() -> None:
    torch.manual_seed(0)
    model = SliceSequenceClassifier(encoder="small").eval()
    batch, lengths = pad_slice_batch(_studies([3, 6], hw=32))
    mask = lengths_to_mask(lengths, 6)
    assert mask.tolist() == [[True] * 3 + [False] * 3, [True] * 6]
    with torch.no_grad():
        a = model(batch, lengths=lengths)
        b = model(batch, slice_mask=mask)
        c = model(batch, lengths=lengths, slice_mask=mask)
    assert torch.equal(a, b) and torch.equal(a, c)
    holes = mask.clone()
    holes[1, 2] = False
    with pytest.raises(ValueError, match="prefix"):
        model(batch, slice_mask=holes)
    with pytest.raises(ValueError, match="disagree"):
        model(batch, lengths=[3, 5], slice_mask=mask)
    with pytest.raises(ValueError, match="between 1 and 6"):
        model(batch, lengths=[0, 6])
    with pytest.raises(ValueError, match="between 1 and 6"):
        model(batch, lengths=[3, 7])
    with pytest.raises(ValueError, match="channels"):
        model(batch[:, :2], lengths=lengths)
    with pytest.raises(ValueError, match=r"\(B, C, H, W, S\)"):
        model(batch[..., 0], lengths=lengths)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_gradients_flow_to_encoder_and_rnn(rnn: str) -> None:
    torch.manual_seed(0)
    model = SliceSequenceClassifier(encoder="small", rnn=rnn, dropout=0.1).train()
    batch, lengths = pad_slice_batch(_studies([6, 4], hw=32))
    logits = model(batch, lengths=lengths)
    mask = lengths_to_mask(lengths, 6)
    target = torch.randint(0, 2, logits.shape).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], target[mask])
    loss.backward()
    for part in (model.encoder, model.rnn, model.project, model.head):
        for name, p in part.named_parameters():
            assert p.grad is not None, name
            assert p.grad.abs().sum() > 0, name


def test_gradients_flow_through_monai_encoder() -> None:
    torch.manual_seed(0)
    model = SliceSequenceClassifier(encoder="resnet10").train()
    logits = model(torch.randn(2, 3, 32, 32, 5), lengths=[5, 3])
    logits.sum().backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads)
    assert model.encoder.stem[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.rnn.parameters())


def test_neighbour_slices_stacking() -> None:
    """Slice k sees [k-1, k, k+1]; study ends repeat themselves instead of reading padding."""
    b, s, c = 2, 5, 1
    seq = torch.arange(s, dtype=torch.float32).view(1, s, 1, 1, 1).expand(b, s, c, 2, 2).clone()
    seq[1, 3:] = -1.0  # padding of a 3-slice study
    out = SliceSequenceClassifier._stack_neighbours(seq, torch.tensor([5, 3]))
    assert out.shape == (b, s, 3 * c, 2, 2)
    got = out[..., 0, 0]
    assert got[0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]
    assert got[1, :3].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
    model = SliceSequenceClassifier(encoder="small", in_channels=2, neighbour_slices=True).eval()
    assert model.encoder.stages[0][0][0].in_channels == 6
    with torch.no_grad():
        assert model(torch.randn(1, 2, 32, 32, 4)).shape == (1, 4, 6)


def test_aux_segmentation_head() -> None:
    torch.manual_seed(0)
    model = SliceSequenceClassifier(encoder="small", aux_seg=True, num_seg_classes=6).eval()
    studies = _studies([5, 8], hw=48)
    batch, lengths = pad_slice_batch(studies)
    with torch.no_grad():
        out = model(batch, lengths=lengths)
        alone = model(studies[0][None])
    assert set(out) == {"logits", "seg", "mask"}
    assert out["logits"].shape == (2, 8, 6)
    assert out["seg"].shape == (2, 6, 48, 48, 8)
    assert out["mask"].tolist() == lengths_to_mask(lengths).tolist()
    assert torch.all(out["seg"][0, ..., 5:] == 0)
    torch.testing.assert_close(out["seg"][0, ..., :5], alone["seg"][0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out["logits"][0, :5], alone["logits"][0], atol=2e-5, rtol=1e-4)

    # the segmentation loss alone trains the shared encoder
    model.train()
    out = model(batch, lengths=lengths)
    out["seg"].square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.mark.parametrize("hw", [(48, 48), (47, 53)])
def test_half_size_aux_head_gives_full_size_maps_and_trains_the_encoder(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    full = SliceSequenceClassifier(encoder="small", aux_seg=True, seg_to_head=True, aux_seg_stride=1)
    half = SliceSequenceClassifier(encoder="small", aux_seg=True, seg_to_head=True, aux_seg_stride=2)
    # same parameters (only the detail branch's first stride differs)
    assert {k: v.shape for k, v in full.state_dict().items()} == {k: v.shape for k, v in half.state_dict().items()}
    x = torch.randn(2, 3, *hw, 6)
    out = half(x, lengths=[6, 4])
    assert out["seg"].shape == (2, 2, *hw, 6)
    assert torch.all(out["seg"][1, ..., 4:] == 0)
    out["seg"].square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in half.encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in half.seg_head.shallow.parameters())
    with pytest.raises(ValueError, match="aux_seg_stride"):
        SliceSequenceClassifier(encoder="small", aux_seg=True, aux_seg_stride=4)


def test_additive_aux_fusion_is_smaller_keeps_the_contract_and_trains_both_branches() -> None:
    torch.manual_seed(0)
    concat = SliceSequenceClassifier(encoder="small", aux_seg=True, seg_to_head=True, aux_seg_stride=2)
    add = SliceSequenceClassifier(encoder="small", aux_seg=True, seg_to_head=True, aux_seg_stride=2,
                                  aux_seg_fusion="add")
    # the fusing 3x3 convolution reads one branch's width instead of three
    assert add.seg_head.fuse[0][0].in_channels == add.seg_head.shallow[1][0].out_channels
    assert _n_params(add.seg_head) < 0.6 * _n_params(concat.seg_head)
    x = torch.randn(2, 3, 40, 36, 5)
    out = add(x, lengths=[5, 3])
    assert out["seg"].shape == (2, 2, 40, 36, 5) and out["logits"].shape == (2, 5, 6)
    assert torch.all(out["seg"][1, ..., 3:] == 0) and torch.all(out["logits"][1, 3:] == 0)
    out["seg"].square().mean().backward()
    for branch in (add.encoder, add.seg_head.deep, add.seg_head.shallow):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.parameters())
    # a concat checkpoint does not load into an additive head (shapes differ): no silent mix-up
    with pytest.raises(RuntimeError, match="size mismatch"):
        add.load_state_dict(concat.state_dict())
    with pytest.raises(ValueError, match="aux_seg_fusion"):
        SliceSequenceClassifier(encoder="small", aux_seg=True, aux_seg_fusion="sum")


def test_default_parameter_counts() -> None:
    counts = {e: _n_params(SliceSequenceClassifier(encoder=e)) for e in ENCODERS}
    # default config (DenseNet121 encoder, 256-d features, 1-layer bidirectional GRU, 128 hidden)
    assert _n_params(SliceSequenceClassifier()) == counts["densenet121"]
    assert 7_000_000 < counts["densenet121"] < 8_000_000
    assert 4_000_000 < counts["efficientnet-b0"] < 5_000_000
    assert 11_000_000 < counts["resnet18"] < 12_500_000
    assert 5_000_000 < counts["resnet10"] < 6_000_000
    assert counts["small"] < 1_000_000
    buf = io.BytesIO()
    torch.save(SliceSequenceClassifier(encoder="small").state_dict(), buf)
    assert len(buf.getvalue()) < 4 * 1024 * 1024


def test_no_weights_are_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    def _fail(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _fail)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fail)
    for e in ENCODERS:
        SliceSequenceClassifier(encoder=e)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"encoder": "vgg16"}, "encoder"), ({"rnn": "transformer"}, "rnn"), ({"dropout": 1.5}, "dropout")],
)
def test_invalid_configurations(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SliceSequenceClassifier(**kwargs)


def test_pad_slice_batch() -> None:
    vols = [np.ones((2, 4, 4, 3), np.float32), torch.full((2, 4, 4, 5), 2.0)]
    batch, lengths = pad_slice_batch(vols, pad_value=-7.0)
    assert batch.shape == (2, 2, 4, 4, 5) and batch.dtype == torch.float32
    assert lengths.dtype == torch.long and lengths.tolist() == [3, 5]
    assert torch.all(batch[0, ..., :3] == 1) and torch.all(batch[0, ..., 3:] == -7)
    assert torch.all(batch[1] == 2)
    labels, n = pad_slice_batch([torch.ones(3, 6), torch.ones(1, 6)], axis=0)
    assert labels.shape == (2, 3, 6) and n.tolist() == [3, 1] and labels[1, 1:].sum() == 0
    with pytest.raises(ValueError, match="incompatible"):
        pad_slice_batch([torch.zeros(3, 4, 4, 2), torch.zeros(3, 5, 4, 2)])
    with pytest.raises(ValueError, match="at least one"):
        pad_slice_batch([])


def test_max_pooling_sees_a_small_bright_spot_that_average_pooling_dilutes() -> None:
    """A constant encoder map with one hot pixel: the max-pooled feature moves by the spot's
    full height, the average-pooled one by 1/(h*w) of it."""
    from ichct.networks.slice_sequence import GlobalPool

    fmap = torch.zeros(1, 2, 16, 16)
    spot = fmap.clone()
    spot[0, 0, 5, 7] = 8.0
    avg, mx, both = GlobalPool("avg"), GlobalPool("max"), GlobalPool("avgmax")
    assert float((avg(spot) - avg(fmap))[0, 0]) == pytest.approx(8.0 / 256)
    assert float((mx(spot) - mx(fmap))[0, 0]) == pytest.approx(8.0)
    assert both(spot).shape == (1, 4) and torch.equal(both(spot), torch.cat([avg(spot), mx(spot)], dim=1))


def test_seg_slice_stats_read_the_blood_probability() -> None:
    from ichct.networks import seg_slice_stats

    logits = torch.zeros(2, 2, 10, 10)
    logits[:, 0] = 10.0  # background everywhere
    logits[1, 1, 2:4, 2:7] = 20.0  # 10 blood pixels on the second slice
    st = seg_slice_stats(logits)
    assert st.shape == (2, 3)
    assert float(st[0, 0]) < 1e-3 and float(st[1, 0]) == pytest.approx(1.0, abs=1e-4)
    assert float(st[1, 1]) == pytest.approx(1.0, abs=1e-4)  # top 1 % (one pixel) is blood
    assert float(st[1, 2]) == pytest.approx(np.log1p(10.0), abs=1e-3)


@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax"])
def test_seg_to_head_variants_keep_padding_invariance_and_train_the_seg_head(pooling: str) -> None:
    torch.manual_seed(0)
    model = SliceSequenceClassifier(encoder="small", feature_dim=16, rnn_hidden=8, aux_seg=True,
                                    seg_to_head=True, pooling=pooling, neighbour_slices=True).eval()
    a, b = _studies([5, 3], hw=32)
    batch, lengths = pad_slice_batch([a, b])
    out = model(batch, lengths=lengths)
    alone = model(b[None])
    assert torch.allclose(out["logits"][1, :3], alone["logits"][0], atol=1e-5)
    assert torch.all(out["logits"][1, 3:] == 0)
    # the classification loss alone reaches the segmentation head through the statistics
    model.train()
    model.zero_grad()
    model(batch, lengths=lengths)["logits"].sum().backward()
    grads = [p.grad for p in model.seg_head.parameters()]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_seg_to_head_needs_aux_seg_and_pooling_is_validated() -> None:
    with pytest.raises(ValueError, match="seg_to_head needs aux_seg"):
        SliceSequenceClassifier(encoder="small", seg_to_head=True)
    with pytest.raises(ValueError, match="pooling must be one of"):
        SliceSequenceClassifier(encoder="small", pooling="median")
