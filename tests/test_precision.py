"""Reduced precision (SmoothedIQA(..., precision=...), --precision): model and denoiser
run under torch.autocast, the scores of that reduced-precision function reach the
bounds unrounded (float64), so the certificates stay exact for the function computed.

The coverage test uses a one-pixel model that is nondecreasing in its input under
autocast too (bf16 rounding is monotone), so the range of its smoothed median over
[x - eps, x + eps] is bounded by the model itself at the two ends."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from certiqa import SmoothedIQA, bounds
from certiqa.cli import main
from certiqa.runner import RunRefused, certify_paths

from test_coverage import assert_coverage
from test_runner import PROVENANCE, make_images


class Increasing(nn.Module):
    """f(z) = conv1x1(z) + 1e-3 z on one pixel: 64 + 4 z, rounded to bf16 (spacing 0.5) under
    autocast, plus a float32 term that keeps f nondecreasing, breaks most of the bf16 ties and
    makes its scores float32 values that bf16 cannot hold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(4.0)
            self.conv.bias.fill_(64.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.conv(z).float() + 1e-3 * z.float()).flatten()


class Recorder(nn.Module):
    """Passes scores through and keeps them, with the autocast state seen inside."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.scores: list[torch.Tensor] = []
        self.autocast: list[tuple[bool, torch.dtype]] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.autocast.append((torch.is_autocast_enabled(z.device.type), torch.get_autocast_dtype(z.device.type)))
        scores = self.model(z)
        self.scores.append(scores.detach().clone())
        return scores


def _amp(model: nn.Module, z: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        return model(z)


def test_bf16_certificates_cover_the_range_of_the_bf16_models_smoothed_median():
    """Binomial check at LEVEL (test_coverage.py) of: lower <= min and max <= upper over the
    ball, for the smoothed median of the function computed under bf16 autocast. f is
    nondecreasing, so h_0.5(x + d) = inf{y : P[f(x + d + G) <= y] >= 1/2} lies between the left
    limit of f at x + d and f(x + d):
    the minimum over |d| <= eps is at most f(x - eps) and the maximum at least
    f(x + eps - 1e-6), so every miss counted here is a real miss. Rounding the bounds to
    bf16 (the spacing is 0.5 here, far above the 1e-3 z term) misses in most runs."""
    runs, n, sigma, eps, alpha = 200, 200, 0.25, 0.1, 0.1
    model = Increasing()
    x = torch.full((1, 1, 1, 1), 0.4137)
    worst_low = float(_amp(model, x - eps))
    best_high = float(_amp(model, x + eps - 1e-6))
    misses = 0
    for seed in range(runs):
        smoothed = SmoothedIQA(model, sigma, n=n, alpha=alpha, batch_size=n, clip=False, seed=seed, precision="bf16")
        res = smoothed.certify(x, eps)
        assert bool(res.certified) and res.lower.dtype == torch.float64
        misses += not (float(res.lower) <= worst_low and best_high <= float(res.upper))
    assert_coverage(misses, runs, alpha)
    # the bf16 function is not the fp32 one: same noise, other scores
    bf16 = SmoothedIQA(model, sigma, n=n, clip=False, seed=0, precision="bf16").sample(x)
    fp32 = SmoothedIQA(model, sigma, n=n, clip=False, seed=0).sample(x)
    assert (bf16 != fp32).float().mean() > 0.9


def test_bounds_are_the_unrounded_scores_of_the_autocast_model():
    """The samples are exactly the scores the model returned under autocast, promoted to
    float64, and the bounds exactly their order statistics: no value passes through bf16."""
    recorder = Recorder(Increasing())
    x = torch.rand((2, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    n, sigma, eps, alpha = 300, 0.25, 0.1, 0.01
    smoothed = SmoothedIQA(recorder, sigma, n=n, alpha=alpha, batch_size=128, clip=False, seed=1, precision="bf16")
    samples = smoothed.sample(x)
    returned = torch.cat(recorder.scores).double().reshape(2, n).sort(dim=1).values
    assert samples.dtype == torch.float64 and torch.equal(samples, returned)
    assert set(recorder.autocast) == {(True, torch.bfloat16)}
    res = smoothed.certify(x, eps)
    k_lower, k_upper = bounds.bound_ranks(n, sigma, eps, alpha)
    assert torch.equal(res.lower, samples[:, k_lower - 1]) and torch.equal(res.upper, samples[:, k_upper - 1])
    assert torch.equal(res.median, samples[:, n // 2 - 1])
    for bound in (res.lower, res.upper, res.median):  # float32 scores that bf16 cannot hold
        assert (bound.to(torch.bfloat16).double() != bound).all()


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_model_and_denoiser_run_under_autocast_to_the_precision(precision, dtype):
    """Both in certify and in base_scores (the attacks' path); fp16 autocast runs on the CPU."""
    model, denoiser = Recorder(nn.Sequential(nn.Conv2d(3, 1, 3), nn.Flatten(), nn.LazyLinear(1))), Recorder(
        nn.Conv2d(3, 3, 1))
    x = torch.rand(1, 3, 8, 8)
    _amp(model, x)  # materialise the lazy layer
    model.scores.clear(), model.autocast.clear()
    smoothed = SmoothedIQA(model, 0.1, n=20, batch_size=8, denoiser=denoiser, seed=0, precision=precision)
    smoothed.certify(x, 0.05)
    smoothed.base_scores(x.expand(4, -1, -1, -1), torch.randn(4, 3, 8, 8))
    assert set(model.autocast) == set(denoiser.autocast) == {(True, dtype)}
    assert {s.dtype for s in model.scores} == {dtype} and {s.dtype for s in denoiser.scores} == {dtype}
    plain = Recorder(nn.Conv2d(3, 3, 1))
    SmoothedIQA(lambda z: z.mean(dim=(1, 2, 3)), 0.1, n=8, denoiser=plain, seed=0).certify(x, 0.05)
    assert {enabled for enabled, _ in plain.autocast} == {False} and {s.dtype for s in plain.scores} == {torch.float32}


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, got 'fp64'; fp32 runs"):
        SmoothedIQA(Increasing(), 0.1, precision="fp64")
    assert "precision='bf16'" in repr(SmoothedIQA(Increasing(), 0.1, precision="bf16"))


class MeanConv(nn.Module):
    """A conv then the mean: scores that bf16 autocast changes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3)
        torch.nn.init.constant_(self.conv.weight, 1 / 27)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 100 * self.conv(z).float().mean(dim=(1, 2, 3))


def test_rows_record_the_precision_and_resume_refuses_another(tmp_path):
    paths = make_images(tmp_path / "imgs", 2)
    out = tmp_path / "r.csv"
    model = MeanConv()
    kwargs = dict(provenance=PROVENANCE, progress=False, log=lambda message: None, min_size=8)
    smoothed = SmoothedIQA(model, 0.12, n=16, alpha=0.2, seed=0, precision="bf16")
    certify_paths(smoothed, [str(p) for p in paths[:1]], [0.05], out=out, **kwargs)
    (row,) = list(csv.DictReader(out.open()))
    assert row["precision"] == "bf16"
    from certiqa.io import read_image

    image = read_image(paths[0]).image.unsqueeze(0)
    assert float(row["clean"]) == float(_amp(model, image))  # the clean score in the run's precision too
    with pytest.raises(RunRefused, match=r"precision: file bf16, this run fp32"):
        fp32 = SmoothedIQA(model, 0.12, n=16, alpha=0.2, seed=0)
        certify_paths(fp32, [str(p) for p in paths], [0.05], out=out, resume=True, **kwargs)
    # a file written before the column existed was made in fp32
    rows = list(csv.DictReader(out.open()))
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, [k for k in rows[0] if k != "precision"])
        writer.writeheader()
        writer.writerows([{k: v for k, v in r.items() if k != "precision"} for r in rows])
    run = certify_paths(fp32, [str(p) for p in paths], [0.05], out=out, resume=True, **kwargs)
    assert run.resumed == 1 and run.certified == 1
    with pytest.raises(RunRefused, match=r"precision: file fp32, this run bf16"):
        certify_paths(smoothed, [str(p) for p in paths], [0.05], out=out, resume=True, **kwargs)


def test_cli_precision_option(tmp_path, capsys):
    (path,) = make_images(tmp_path / "imgs", 1, size=(40, 40))
    out = tmp_path / "r.jsonl"
    common = ["certify", str(path), "--model", "certiqa.models:CNNIQA", "-n", "16", "--alpha", "0.2", "--seed", "0",
              "--quiet", "--device", "cpu", "--out", str(out)]
    assert main([*common, "--precision", "bf16"]) == 0
    assert '"precision": "bf16"' in out.read_text()
    with pytest.raises(SystemExit, match="precision: file bf16, this run fp32"):
        main([*common, "--resume"])
    with pytest.raises(SystemExit) as err:
        main([*common, "--precision", "fp64"])
    assert err.value.code == 2 and "invalid choice: 'fp64'" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_cuda_reduced_precision_scores_reach_the_bounds_unrounded(precision, dtype):
    recorder = Recorder(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(4, 1)).cuda())
    x = torch.rand(2, 3, 32, 32, device="cuda")
    smoothed = SmoothedIQA(recorder, 0.12, n=100, batch_size=64, seed=0, precision=precision)
    samples = smoothed.sample(x)
    assert samples.device.type == "cuda" and samples.dtype == torch.float64
    assert set(recorder.autocast) == {(True, dtype)} and {s.dtype for s in recorder.scores} == {dtype}
    assert torch.equal(samples, torch.cat(recorder.scores).double().reshape(2, 100).sort(dim=1).values)


@pytest.mark.cuda
def test_cuda_scores_match_the_cpu_within_the_precisions_rounding():
    """The same noisy images scored on CUDA and on the CPU (the default model and its denoiser):
    fp32 within 0.25 (cuDNN may run it in TF32), bf16 autocast within 1.5 (the CPU's own bf16 run
    moves these scores, which spread over 45-58, by up to 0.3)."""
    from certiqa.denoisers import pretrained
    from certiqa.models import load_model

    model, denoiser = load_model("default"), pretrained(0.12)
    x = torch.rand((1, 3, 64, 96), generator=torch.Generator().manual_seed(0)).expand(8, -1, -1, -1)
    noise = torch.randn((8, 3, 64, 96), generator=torch.Generator().manual_seed(1))
    cpu = SmoothedIQA(model, 0.12, denoiser=denoiser).base_scores(x, noise).detach()
    for precision, tolerance in (("fp32", 0.25), ("bf16", 1.5)):
        cuda = SmoothedIQA(model.cuda(), 0.12, denoiser=denoiser.cuda(), precision=precision)
        scores = cuda.base_scores(x.cuda(), noise.cuda()).detach().float().cpu()
        assert torch.allclose(scores, cpu, atol=tolerance), (precision, scores, cpu)


@pytest.mark.cuda
def test_cuda_cli_run_records_device_and_precision(tmp_path):
    (path,) = make_images(tmp_path / "imgs", 1, size=(40, 40))
    out = tmp_path / "r.csv"
    assert main(["certify", str(path), "--model", "certiqa.models:CNNIQA", "-n", "64", "--alpha", "0.2", "--seed",
                 "0", "--quiet", "--device", "cuda", "--precision", "bf16", "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["device"] == "cuda:0" and row["precision"] == "bf16" and row["certified"] == "True"


def test_fp16_overflow_is_reported_with_a_way_out():
    """A model whose activations pass 65504 turns to inf in fp16: the error says so, bf16 holds it."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Flatten(), nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.fill_(1e5), model[0].bias.fill_(0.0), model[2].weight.fill_(1e-3), model[2].bias.fill_(0.0)
    x = torch.full((1, 1, 1, 1), 0.9)
    with pytest.raises(ValueError, match=r"non-finite score \(inf\) for image index 0 .* \(fp16 overflows above "
                                         r"65504: try precision bf16\)\.$"):
        SmoothedIQA(model, 0.01, n=10, seed=0, precision="fp16").certify(x, 0.0)
    assert torch.isfinite(SmoothedIQA(model, 0.01, n=10, seed=0, precision="bf16").sample(x)).all()
