import torch

from mpbn.data import DeviceLoader
from mpbn.data.augment import AugmentSpec
from mpbn.data.sampling import epoch_indices


def _loader(n=50, batch_size=8, **kwargs):
    data = torch.randint(
        0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    targets = torch.arange(n) % 5
    defaults = dict(
        batch_size=batch_size,
        shuffle=True,
        augment=AugmentSpec(2, True, 4),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        seed=7,
    )
    defaults.update(kwargs)
    return DeviceLoader(data, targets, **defaults)


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_batches_shape_dtype_and_length():
    loader = _loader()
    batches = _epoch(loader)
    assert len(batches) == len(loader) == 7
    x, y = batches[0]
    assert x.shape == (8, 3, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert batches[-1][0].shape[0] == 2


def test_epoch_replays_exactly_after_set_epoch():
    loader = _loader()
    loader.set_epoch(3)
    first = _epoch(loader)
    loader.set_epoch(4)
    other = _epoch(loader)
    resumed = _loader()
    resumed.set_epoch(3)
    again = _epoch(resumed)
    for (xa, ya), (xb, yb) in zip(first, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other, strict=True))


def test_eval_order_is_natural_without_augmentation():
    data = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    loader = DeviceLoader(data, torch.arange(10), batch_size=4, mean=(0.0,), std=(1.0,))
    x = torch.cat([b for b, _ in loader])
    torch.testing.assert_close(x, data.float() / 255)


def test_normalization_statistics():
    data = torch.randint(0, 256, (400, 3, 8, 8), dtype=torch.uint8)
    mean = tuple(data.float().div(255).mean((0, 2, 3)).tolist())
    std = tuple(data.float().div(255).std((0, 2, 3)).tolist())
    loader = DeviceLoader(data, torch.zeros(400), batch_size=400, mean=mean, std=std)
    x, _ = next(iter(loader))
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)


def test_ranks_get_disjoint_equal_shards_covering_the_epoch():
    shards = [
        epoch_indices(10, shuffle=True, seed=1, epoch=2, rank=r, world_size=3) for r in range(3)
    ]
    assert {len(s) for s in shards} == {4}
    covered = torch.cat(shards)
    assert set(covered.tolist()) == set(range(10))
    eval_shards = [
        epoch_indices(10, shuffle=False, seed=1, epoch=0, rank=r, world_size=3, pad=False)
        for r in range(3)
    ]
    assert sorted(torch.cat(eval_shards).tolist()) == list(range(10))


def test_ranks_share_order_but_not_augmentation():
    loaders = [_loader(rank=r, world_size=2) for r in range(2)]
    targets = [torch.cat([y for _, y in ld]) for ld in loaders]
    assert len(targets[0]) == len(targets[1]) == 25
    assert len(loaders[0]) == len(loaders[1])


def test_frames_layout_is_time_first_and_shares_crop_over_time():
    data = torch.arange(4 * 3 * 2 * 6 * 6, dtype=torch.float32).view(4, 3, 2, 6, 6)
    data[:, 1] = data[:, 0]
    data[:, 2] = data[:, 0]
    loader = DeviceLoader(
        data,
        torch.arange(4),
        batch_size=4,
        shuffle=True,
        scale=1.0,
        augment=AugmentSpec(2, True, 0),
        layout="frames",
    )
    x, _ = next(iter(loader))
    assert x.shape == (3, 4, 2, 6, 6)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])


def test_pixels_layout_is_raster_order():
    data = torch.arange(2 * 16, dtype=torch.uint8).view(2, 1, 4, 4)
    loader = DeviceLoader(data, torch.arange(2), batch_size=2, layout="pixels", scale=1.0)
    x, _ = next(iter(loader))
    assert x.shape == (16, 2, 1)
    assert x[:, 1, 0].tolist() == list(range(16, 32))

