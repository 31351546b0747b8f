import numpy as np
import torch

from mpbn.data.augment import (
    auto_augment,
    crop_with_offsets,
    cutout_with_centers,
    flip_where,
    normalize,
    random_crop,
)


def _reference_crop(image: np.ndarray, padding: int, dy: int, dx: int) -> np.ndarray:
    padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
    return padded[:, dy : dy + image.shape[1], dx : dx + image.shape[2]]


def test_crop_matches_hand_computation():
    images = torch.arange(2 * 3 * 6 * 5, dtype=torch.uint8).view(2, 3, 6, 5)
    offsets = torch.tensor([[0, 8], [5, 3]])
    out = crop_with_offsets(images, 4, offsets)
    for b in range(2):
        expected = _reference_crop(images[b].numpy(), 4, *offsets[b].tolist())
        np.testing.assert_array_equal(out[b].numpy(), expected)


def test_crop_at_centre_offset_is_identity():
    images = torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8)
    out = crop_with_offsets(images, 2, torch.full((3, 2), 2))
    assert torch.equal(out, images)


def test_flip_then_crop_of_known_image():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    flipped = flip_where(image, torch.tensor([True]))
    out = crop_with_offsets(flipped, 1, torch.tensor([[0, 2]]))
    expected = torch.tensor([[0, 0, 0, 0], [2, 1, 0, 0], [6, 5, 4, 0], [10, 9, 8, 0]])
    assert torch.equal(out[0, 0], expected.to(torch.uint8))


def test_flip_only_where_masked():
    x = torch.randn(2, 1, 3, 3)
    out = flip_where(x, torch.tensor([False, True]))
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], x[1].flip(-1))


def test_cutout_zeroes_a_clipped_square():
    x = torch.ones(2, 3, 8, 8)
    out = cutout_with_centers(x, 4, torch.tensor([[4, 4], [0, 7]]))
    assert out[0, :, 2:6, 2:6].abs().sum() == 0
    assert out[0].sum() == 3 * (64 - 16)
    # Clipped at the corner: rows -2..1 and cols 5..8 leave a 2x3 hole.
    assert out[1].sum() == 3 * (64 - 6)
    assert out[1, :, 0:2, 5:8].abs().sum() == 0


def test_normalize_per_channel():
    x = torch.rand(4, 3, 5, 5)
    out = normalize(x, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    torch.testing.assert_close(out[:, 1], (x[:, 1] - 0.2) / 0.25)


def test_random_crop_reproducible_and_in_range():
    x = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    a = random_crop(x, 2, torch.Generator().manual_seed(1))
    b = random_crop(x, 2, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape


def test_auto_augment_keeps_range_shape_and_input():
    x = torch.rand(64, 3, 16, 16)
    before = x.clone()
    out = auto_augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(x, before)
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


def test_fused_crop_flip_equals_crop_then_flip():
    from mpbn.data.augment import crop_flip

    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (16, 3, 7, 9), dtype=torch.uint8, generator=generator)
    offsets = torch.randint(0, 7, (16, 2), generator=generator)
    flip = torch.rand(16, generator=generator) < 0.5
    expected = flip_where(crop_with_offsets(x, 3, offsets), flip)
    assert torch.equal(crop_flip(x, 3, offsets, flip), expected)
    assert torch.equal(
        crop_flip(x, 0, torch.zeros(16, 2, dtype=torch.int64), flip), flip_where(x, flip)
    )


def test_in_place_normalize_matches_reference():
    from mpbn.data.augment import normalize_

    x = torch.rand(4, 3, 5, 5)
    expected = normalize(x, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    torch.testing.assert_close(normalize_(x.clone(), (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)), expected)
