"""What a real model brings to smoothing: its memory (the adaptive model batch and the
out-of-memory backoff), its own randomness (detection, seeding, what the CLI records) and
its own preprocessing (noise at the input's resolution, before the model resizes)."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from certiqa.cli import main
from certiqa.memory import free_bytes, is_out_of_memory, peak_bytes
from certiqa.models import load_model
from certiqa.noise import GaussianStreams
from certiqa.smoothing import SmoothedIQA, model_rng

from conftest import REPO

CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate "
           "1 bytes")


def _image(shape=(2, 3, 20, 16), seed=0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


class Fragile(nn.Module):
    """Weighted mean of each image (a score that does not depend on the rest of the batch);
    raises the CPU allocator's out-of-memory error for batches above ``limit``. Records
    the noisy images of every call that succeeded."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.seen: list[torch.Tensor] = []
        self.failed: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and x.shape[0] > self.limit:
            self.failed.append(x.shape[0])
            raise RuntimeError(CPU_OOM)
        self.seen.append(x.clone())
        weights = torch.linspace(0.5, 1.5, x[0].numel(), dtype=x.dtype).reshape(x.shape[1:])
        return (x * weights).mean(dim=(1, 2, 3))


def test_out_of_memory_halves_the_batch_and_keeps_the_same_draws():
    x = _image()
    free = Fragile()
    reference = SmoothedIQA(free, 0.2, n=50, batch_size=16, seed=7, max_memory_bytes=1 << 40).sample(x)
    assert [len(z) for z in free.seen] == [1, 15, 16, 16, 16, 16, 16, 4]  # fills of 16; the probe scores one
    fragile = Fragile(limit=3)
    backed_off = SmoothedIQA(fragile, 0.2, n=50, batch_size=16, seed=7, max_memory_bytes=1 << 40).sample(x)
    assert torch.equal(backed_off, reference)  # the same rows
    # the 15 after the one-image probe fail, then 7; from then on batches of 3, never halved again
    assert fragile.failed == [15, 7] and max(map(len, fragile.seen[1:])) == 3
    # nothing lost, nothing scored twice: the noisy images that reached the model are those of the
    # unconstrained run, in the same order
    assert torch.equal(torch.cat(fragile.seen), torch.cat(free.seen))
    # without a budget the first call takes a whole fill; once halved, the measurement never raises it again
    unbudgeted = Fragile(limit=3)
    assert torch.equal(SmoothedIQA(unbudgeted, 0.2, n=50, batch_size=16, seed=7).sample(x), reference)
    assert unbudgeted.failed == [16, 8, 4] and {len(z) for z in unbudgeted.seen} == {2}
    assert torch.equal(torch.cat(unbudgeted.seen), torch.cat(free.seen))


def test_out_of_memory_with_one_image_and_other_errors_are_raised():
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        SmoothedIQA(Fragile(limit=0), 0.2, n=4, batch_size=4, seed=0).sample(_image())

    def broken(z: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        SmoothedIQA(broken, 0.2, n=4, batch_size=4, seed=0).sample(_image())


def test_is_out_of_memory_on_a_real_cpu_allocation_failure():
    with pytest.raises(RuntimeError) as caught:
        torch.empty(1 << 50, dtype=torch.uint8)  # a petabyte
    assert is_out_of_memory(caught.value) and "DefaultCPUAllocator: can't allocate memory" in str(caught.value)
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("can't allocate memory"))  # only the allocator's RuntimeError
    assert free_bytes(torch.device("cpu")) is None or free_bytes(torch.device("cpu")) > 0


MIB = 1 << 20


class Hungry(nn.Module):
    """Takes 16 MiB of scratch memory per image (written, so the pages are resident)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        scratch = torch.ones(x.shape[0], 4 * MIB, dtype=torch.float32)  # 16 MiB per image
        return x.mean(dim=(1, 2, 3)) + scratch[:, :1].sum(dim=1) - 1.0


def _can_measure_cpu_peak() -> bool:
    return peak_bytes(lambda: torch.ones(4 * MIB), torch.device("cpu")) is not None


BUDGET_CHECK = """
import torch
from certiqa.memory import peak_bytes
from certiqa.smoothing import SmoothedIQA
from test_model_runtime import MIB, Hungry, _image

peak = peak_bytes(lambda: torch.ones(4 * MIB), torch.device("cpu"))
assert peak is not None and 15 * MIB <= peak <= 24 * MIB, peak  # 16 MiB written: the high-water mark rose by that
x = _image((1, 3, 20, 16))
hungry = Hungry()
small = SmoothedIQA(hungry, 0.2, n=40, batch_size=16, seed=3, max_memory_bytes=40 * MIB).sample(x)
assert hungry.sizes[0] == 1 and sum(hungry.sizes) == 40, hungry.sizes  # the probe scored one real noisy image
assert max(hungry.sizes[1:]) == 2, hungry.sizes  # 40 MiB hold two images' 16 MiB and no more
roomy = Hungry()
large = SmoothedIQA(roomy, 0.2, n=40, batch_size=16, seed=3, max_memory_bytes=1 << 40).sample(x)
assert max(roomy.sizes) == 16 and torch.equal(small, large)
print("ok")
"""


@pytest.mark.skipif(not _can_measure_cpu_peak(), reason="the CPU's peak memory is read from Linux's /proc/self")
def test_a_small_memory_budget_lowers_the_model_batch_without_changing_rows():
    """In a fresh process: there the C heap holds no freed pages that the model could reuse
    unseen (certiqa.memory measures the rise of the resident set)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    done = subprocess.run([sys.executable, "-c", BUDGET_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


class CudaHungry(nn.Module):
    """Takes 256 MiB of CUDA memory per image; records the batches that got their memory."""

    def __init__(self) -> None:
        super().__init__()
        self.one = nn.Parameter(torch.ones(()))
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scratch = torch.ones(x.shape[0], 64 * MIB, device=x.device)
        self.sizes.append(x.shape[0])
        return x.mean(dim=(1, 2, 3)) * self.one + scratch[:, 0] - 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_budget_and_real_out_of_memory_keep_the_rows():
    device = torch.device("cuda")
    x = _image((1, 3, 20, 16)).to(device)

    def run(model: CudaHungry, budget: int) -> torch.Tensor:
        return SmoothedIQA(model.to(device), 0.2, n=32, batch_size=16, seed=1, max_memory_bytes=budget).sample(x)

    reference = run(CudaHungry(), 1 << 50)
    probed = CudaHungry()
    assert torch.equal(run(probed, 600 * MIB), reference) and max(probed.sizes[1:]) == 2  # 600 MiB: two images
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated(device) + 1200 * MIB) / total, device)
    try:  # a real CUDA out-of-memory error: after the one-image probe, 15 and 7 images do not fit in 1.2 GiB, 3 do
        squeezed = CudaHungry()
        got = run(squeezed, 1 << 50)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    assert torch.equal(got, reference) and squeezed.sizes[0] == 1 and max(squeezed.sizes[1:]) == 3


# ----------------------------------------------------------------------------- randomized models

RANDOM_MODELS = '''
import random

import torch
from torch import nn


class RandomCrop(nn.Module):
    """Scores a random 8x8 crop (torch's generator), flipped at random (Python's)."""
    lower_better = False

    def forward(self, x):
        top = int(torch.randint(0, x.shape[-2] - 7, ()))
        left = int(torch.randint(0, x.shape[-1] - 7, ()))
        crop = x[..., top:top + 8, left:left + 8]
        if random.random() < 0.5:
            crop = crop.flip(-1)
        weights = torch.linspace(0.0, 1.0, 8)
        return 100 * (crop * weights).mean(dim=(1, 2, 3))


class Fixed(nn.Module):
    def forward(self, x):
        return 100 * x.mean(dim=(1, 2, 3))


class Resizing(nn.Module):
    """Resizes every image to 16x16 itself (as pyiqa's models do) and records what it was given."""

    def __init__(self):
        super().__init__()
        self.given = []

    def forward(self, x):
        self.given.append(x.clone())
        small = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", antialias=True,
                                                align_corners=False)
        return 100 * (small * torch.linspace(0, 1, 16)).mean(dim=(1, 2, 3))


def random_crop():
    return RandomCrop()


def fixed():
    return Fixed()


def resizing():
    return Resizing()
'''


@pytest.fixture
def random_models(tmp_path, monkeypatch):
    (tmp_path / "runtime_test_models.py").write_text(textwrap.dedent(RANDOM_MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "runtime_test_models"


def test_randomness_is_detected_at_load(random_models):
    assert load_model(f"{random_models}:random_crop").randomized is True
    assert load_model(f"{random_models}:fixed").randomized is False
    assert load_model("default").randomized is False


def test_a_randomized_model_is_seeded_per_call_and_reproducible(random_models):
    model = load_model(f"{random_models}:random_crop")
    x = _image((2, 3, 24, 20))
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(9)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    first = SmoothedIQA(model, 0.1, n=60, batch_size=16, seed=11).sample(x)
    again = SmoothedIQA(model, 0.1, n=60, batch_size=16, seed=11).sample(x)
    assert torch.equal(first, again)
    # the global generators are as they were: seeding a model call does not leak
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    other = SmoothedIQA(model, 0.1, n=60, batch_size=16, seed=12).sample(x)
    assert not torch.equal(first, other)
    # unseeded as a deterministic model (randomized=False), two runs differ: the seeding is what repeats them
    loose = [SmoothedIQA(model, 0.1, n=60, batch_size=16, seed=11, randomized=False).sample(x) for _ in range(2)]
    assert not torch.equal(loose[0], loose[1])


def test_model_rng_seeds_every_global_generator_from_the_seed_and_index():
    device = torch.device("cpu")

    def draws() -> tuple[float, float, float]:
        return float(torch.rand(())), random.random(), float(np.random.rand())

    with model_rng([4, 5], 0, device):
        a = draws()
    with model_rng([4, 5], 0, device):
        b = draws()
    with model_rng([4, 5], 16, device):
        c = draws()
    with model_rng([4, 6], 0, device):
        d = draws()
    assert a == b and all(len({x, y, z}) == 3 for x, y, z in zip(a, c, d))
    torch.manual_seed(1)
    expected = torch.rand(())
    torch.manual_seed(1)
    with model_rng(None, 0, device):  # no seed: nothing seeded, the caller's stream goes on
        got = torch.rand(())
    assert torch.equal(got, expected)


def _write_images(folder, count=2):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (28, 24, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_cli_reports_a_randomized_model_and_repeats_its_rows(random_models, tmp_path, capsys):
    folder = _write_images(tmp_path / "imgs")
    outs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for out in outs:
        args = ["certify", str(folder), "--model", f"{random_models}:random_crop", "--score-range", "0", "100",
                "-n", "40", "--alpha", "0.1", "--seed", "3", "--quiet", "--out", str(out), "--device", "cpu"]
        assert main(args) == 0
    err = capsys.readouterr().err
    assert "randomness of its own" in err and "column randomized" in err
    first, second = (list(csv.DictReader(out.open())) for out in outs)
    assert {row["randomized"] for row in first} == {"True"}
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in first] == \
        [{k: v for k, v in r.items() if k not in drop} for r in second]
    args = ["certify", str(folder), "--model", f"{random_models}:fixed", "-n", "20", "--alpha", "0.1",
            "--score-range", "0", "100", "--quiet", "--out", str(tmp_path / "c.csv"), "--device", "cpu"]
    assert main(args) == 0
    assert "randomness of its own" not in capsys.readouterr().err
    assert {row["randomized"] for row in csv.DictReader((tmp_path / "c.csv").open())} == {"False"}


# ----------------------------------------------------------------------------- preprocessing


def test_noise_is_added_at_the_input_resolution_before_the_models_own_resizing(random_models):
    """The certificate is about the user's image: the model gets clip(x + G) at x's own size
    (here 40x36) and resizes it itself, so the samples are exactly f(clip(x + G)) with G
    drawn at 40x36."""
    model = load_model(f"{random_models}:resizing")
    x = _image((1, 3, 40, 36), seed=2)
    model.model.given.clear()
    samples = SmoothedIQA(model, 0.15, n=24, batch_size=24, seed=5, max_memory_bytes=1 << 40).sample(x)
    given = torch.cat(model.model.given)
    assert given.shape == (24, 3, 40, 36)
    with GaussianStreams(5, "cpu") as streams:  # one fill of 24 noisy copies, as sample draws it
        noise = streams.normal_(torch.empty(24, 3, 40, 36), 0.15)
    noisy = (x + noise).clamp(0, 1)
    assert torch.equal(given, noisy)
    small = F.interpolate(noisy, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    expected = (100 * (small * torch.linspace(0, 1, 16)).mean(dim=(1, 2, 3))).double().sort().values
    torch.testing.assert_close(samples[0], expected, rtol=1e-6, atol=1e-5)


def test_memory_budget_is_checked(tmp_path):
    with pytest.raises(ValueError, match="max_memory_bytes"):
        SmoothedIQA(Fragile(), 0.2, max_memory_bytes=0)
    with pytest.raises(SystemExit, match=r"--max-memory-mb must be >= 1, got 0\."):
        main(["certify", str(tmp_path), "--max-memory-mb", "0"])
