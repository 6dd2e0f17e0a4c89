"""The history of fakes CycleGAN's discriminators see (Shrivastava et al. 2017)."""

import io

import pytest
import torch

from gancolor.errors import ConfigError
from gancolor.models.image_pool import ImagePool


def tagged(*tags: int) -> torch.Tensor:
    """A batch of tiny images whose every pixel is its tag, so an output names its source."""
    return torch.tensor(tags, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def tags(images: torch.Tensor) -> list[int]:
    return [int(v) for v in images[:, 0, 0, 0]]


def test_size_zero_passes_fakes_through():
    pool = ImagePool(0)
    fakes = tagged(1, 2, 3)
    assert torch.equal(pool(fakes), fakes)
    assert pool.count == 0


def test_fills_up_passing_every_fake_through():
    pool = ImagePool(4, seed=0)
    assert tags(pool(tagged(0, 1, 2))) == [0, 1, 2]
    assert tags(pool(tagged(3))) == [3]
    assert pool.count == 4 and tags(pool.images) == [0, 1, 2, 3]


def test_once_full_half_the_fakes_are_swapped_for_stored_ones():
    pool = ImagePool(10, seed=1)
    pool(tagged(*range(10)))
    history = set(range(10))
    swapped = 0
    queries = 2000
    for tag in range(10, 10 + queries):
        out = tags(pool(tagged(tag)))[0]
        if out == tag:
            assert tag not in tags(pool.images)  # passed through, not stored
        else:
            swapped += 1
            assert out in history  # a fake stored earlier ...
            assert out not in tags(pool.images) and tag in tags(pool.images)  # ... replaced by the new one
            history.discard(out)
            history.add(tag)
    # Binomial(2000, 0.5): 4 sigma is +-0.045.
    assert swapped / queries == pytest.approx(0.5, abs=0.045)
    assert pool.count == 10


def test_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    pool = ImagePool(2, seed=3)
    for tag in range(20):
        pool(tagged(tag))
    assert torch.equal(torch.get_rng_state(), before)


def test_checkpointed_pool_continues_with_the_same_choices():
    pool = ImagePool(3, seed=5)
    for tag in range(6):
        pool(tagged(tag, 100 + tag))
    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    buffer.seek(0)
    restored = ImagePool(3, seed=99)  # a different seed: the checkpoint must win
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.count == 3 and torch.equal(restored.images, pool.images)
    for tag in range(6, 30):
        assert torch.equal(restored(tagged(tag)), pool(tagged(tag)))


def test_state_is_a_snapshot_and_an_empty_pool_round_trips():
    pool = ImagePool(2, seed=0)
    empty = ImagePool(2, seed=0)
    empty.load_state_dict(pool.state_dict())
    assert empty.count == 0 and empty.images is None
    pool(tagged(1, 2))
    state = pool.state_dict()
    for tag in range(3, 10):
        pool(tagged(tag))
    assert tags(next(iter(state.values()))["images"]) == [1, 2]


def test_bad_size_and_changing_shapes_are_errors():
    with pytest.raises(ConfigError, match="pool_size"):
        ImagePool(-1)
    pool = ImagePool(2)
    pool(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="image pool"):
        pool(torch.zeros(1, 3, 8, 8))
