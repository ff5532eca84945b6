"""GaussianStreams: the distribution, determinism across thread counts, stream independence, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from certiqa import SmoothedIQA
from certiqa.noise import STREAMS, GaussianStreams


@pytest.fixture
def two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def _fill(seed: int | list[int] | tuple[int, ...] | None, shape=(16, 3, 20, 20), std: float = 1.0) -> torch.Tensor:
    with GaussianStreams(seed, "cpu") as noise:
        return noise.normal_(torch.empty(shape), std)


def test_entries_are_standard_normal_times_std(two_threads):
    values = _fill(0, (64, 3, 32, 32), std=0.25).flatten().double().numpy() / 0.25
    assert stats.kstest(values, "norm").pvalue > 1e-3
    assert abs(values.mean()) < 5 / np.sqrt(values.size)


def test_every_stream_fills_its_own_block_and_blocks_are_uncorrelated(two_threads):
    rows = _fill(3, (STREAMS, 4096)).double().numpy()
    corr = np.corrcoef(rows)
    off_diagonal = corr[~np.eye(STREAMS, dtype=bool)]
    assert np.abs(off_diagonal).max() < 5 / np.sqrt(4096)
    assert len({row.tobytes() for row in rows}) == STREAMS


def test_same_seed_same_noise_whatever_the_thread_count():
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _fill(7)
        torch.set_num_threads(2)
        two = _fill(7)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(one, two)
    assert not torch.equal(one, _fill(8))
    assert not torch.equal(_fill(None), _fill(None))


def test_fewer_rows_than_streams_and_inference_tensors(two_threads):
    with torch.inference_mode(), GaussianStreams(0, "cpu") as noise:
        out = noise.normal_(torch.full((3, 5), float("nan")))
    assert out.is_inference() and torch.isfinite(out).all()


def test_smoothed_samples_do_not_depend_on_the_thread_count():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    smoothed = SmoothedIQA(lambda z: z.mean(dim=(1, 2, 3)), 0.1, n=40, batch_size=16, seed=4)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = smoothed.sample(x)
        torch.set_num_threads(2)
        two = smoothed.sample(x)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(one, two)


def test_scores_that_view_the_reused_buffer_are_copied_out():
    """A model may return a view of its input; later chunks reuse that buffer."""
    x = torch.full((1, 1, 2, 2), 0.5)
    samples = SmoothedIQA(lambda z: z[:, 0, 0, 0], 0.1, n=10, batch_size=3, seed=0).sample(x)
    assert len(set(samples[0].tolist())) == 10


@pytest.mark.parametrize("streams", [0, -2, 1.5, True])
def test_stream_count_errors(streams):
    with pytest.raises(ValueError, match="streams must be a positive int"):
        GaussianStreams(0, "cpu", streams)


def test_a_sequence_seed_is_seedsequence_entropy():
    """Stream s is seeded with word s of SeedSequence(entropy): rebuild block 0 by hand."""
    noise = _fill([5, 2**40, 7], (STREAMS, 10))
    word = int(np.random.SeedSequence([5, 2**40, 7]).generate_state(STREAMS, np.uint32)[0])
    expected = torch.empty(1, 10).normal_(0.0, 1.0, generator=torch.Generator().manual_seed(word))
    assert torch.equal(noise[:1], expected)
    assert torch.equal(_fill([3]), _fill(3)) and torch.equal(_fill((5, 2**40, 7)), _fill([5, 2**40, 7]))
    assert not torch.equal(_fill([5, 7]), _fill([7, 5]))


@pytest.mark.parametrize("seed", [-1, 1.5, True, [], [1, -1], [0, True], (2, 0.5)])
def test_seed_errors(seed):
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        GaussianStreams(seed, "cpu")


def test_out_must_be_contiguous_on_the_device():
    with GaussianStreams(0, "cpu") as noise, pytest.raises(ValueError, match="contiguous tensor on cpu"):
        noise.normal_(torch.empty(4, 6).t())


@pytest.mark.cuda
def test_cuda_streams_are_seeded_and_standard_normal():
    def fill(seed: int) -> torch.Tensor:
        with GaussianStreams(seed, "cuda") as noise:  # "cuda" without an index matches cuda:N tensors
            return noise.normal_(torch.empty(32, 3, 32, 32, device="cuda"), 0.5)

    a, b = fill(0), fill(0)
    assert a.device.type == "cuda" and torch.equal(a, b) and not torch.equal(a, fill(1))
    values = a.flatten().double().cpu().numpy() / 0.5
    assert stats.kstest(values, "norm").pvalue > 1e-3


def test_sample_seed_overrides_the_instance_seed_for_one_call():
    model = lambda z: z.mean(dim=(1, 2, 3))  # noqa: E731
    x = torch.full((1, 3, 8, 8), 0.5)
    smoothed = SmoothedIQA(model, 0.1, n=20, seed=0)
    assert torch.equal(smoothed.sample(x, seed=[5, 6]), SmoothedIQA(model, 0.1, n=20, seed=None).sample(x, seed=[5, 6]))
    assert torch.equal(smoothed.sample(x, seed=5), SmoothedIQA(model, 0.1, n=20, seed=5).sample(x))
    assert torch.equal(smoothed.sample(x), SmoothedIQA(model, 0.1, n=20, seed=0).sample(x))  # the instance seed stays
    assert not torch.equal(smoothed.sample(x, seed=[5, 6]), smoothed.sample(x, seed=[6, 5]))
