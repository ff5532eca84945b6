"""certiqa.training.finetune and `certiqa finetune`: the loss terms on hand-computed cases,
a frozen teacher, a loss that falls, student files that load without pickle and carry their
provenance into certification rows, exact resumption, one-line command errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from certiqa.losses import score_mse, score_spread
from certiqa.models import CNNIQA, load_model
from certiqa.models.spec import LoadedModel
from certiqa.options import describe_model
from certiqa.training import FinetuneConfig, finetune, finetune_losses, load_photos, save_student

REPO = Path(__file__).resolve().parents[1]


def save_image(x: torch.Tensor, path: Path) -> None:
    """(3, H, W) in [0, 1] -> an 8-bit PNG."""
    Image.fromarray((x.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)


class MeanScore(nn.Module):
    """s(x) = w * mean(x) + b: closed-form scores of constant images."""

    def __init__(self, w: float = 1.0, b: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x.mean(dim=(1, 2, 3)) + self.b


def _photos(count: int = 3, size: int = 48, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) for _ in range(count)]


def _tiny_cnniqa(path: Path) -> str:
    """A small CNNIQA state dict file (the teacher) and its spec."""
    torch.manual_seed(0)
    torch.save(CNNIQA(kernels=3, hidden=8).state_dict(), path)
    return f"cnniqa:{path}"


TINY = dict(sigma=0.1, batch_size=2, crop=40, draws=2, lr=1e-2, checkpoint_every=1)


# ----------------------------------------------------------------------------- losses


def test_score_spread_is_the_variance_across_draws():
    draws = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 6.0]])  # variances 1, 0, 9
    assert float(score_spread(draws)) == pytest.approx((1 + 0 + 9) / 3)
    assert float(score_spread(torch.full((4, 5), 7.0))) == 0.0
    with pytest.raises(ValueError, match="K >= 2"):
        score_spread(torch.ones(3, 1))


def test_score_mse_hand_computed():
    assert float(score_mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]))) == pytest.approx((1 + 4) / 2)


def test_finetune_losses_hand_computed():
    """Constant images 0.5 and 0.3, noise draws of constant +1 / -1 (sigma 0.1, no clipping):
    s = mean = x + 0.1 c, so scores (B, K) = [[0.6, 0.4], [0.4, 0.2]]; targets 0.5 and 0.3."""
    images = torch.stack([torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 0.3)])
    noise = torch.stack([torch.ones(2, 3, 4, 4), -torch.ones(2, 3, 4, 4)])  # (K=2, B=2, ...)
    targets = torch.tensor([0.5, 0.3])
    config = FinetuneConfig(sigma=0.1, w_fidelity=1, w_rank=2, margin=0.3, w_consistency=3, w_clean=4, fidelity="mse")
    total, terms = finetune_losses(MeanScore(), images, targets, noise, config)
    fidelity = (0.1**2) * 4 / 4  # every score is 0.1 off its target
    rank = 0.3 - 0.2  # per draw: image 0 above image 1 by 0.2 < margin 0.3
    consistency = 0.1**2  # each image: draws +-0.1 around its mean
    clean = 0.0  # the clean images score their targets exactly
    assert terms["fidelity"] == pytest.approx(fidelity)
    assert terms["rank"] == pytest.approx(rank)
    assert terms["consistency"] == pytest.approx(consistency)
    assert terms["clean"] == pytest.approx(clean, abs=1e-12)
    assert float(total.detach()) == pytest.approx(fidelity + 2 * rank + 3 * consistency + 4 * clean)
    # the score scale divides the scores: squared terms by scale^2, the hinge with the scores
    _, scaled = finetune_losses(MeanScore(), images, targets, noise, config, score_scale=2.0)
    assert scaled["fidelity"] == pytest.approx(fidelity / 4)
    assert scaled["consistency"] == pytest.approx(consistency / 4)
    assert scaled["rank"] == pytest.approx(0.3 - 0.1)
    # L1 fidelity: the mean absolute error
    _, l1 = finetune_losses(MeanScore(), images, targets, noise, FinetuneConfig(sigma=0.1, fidelity="l1"))
    assert l1["fidelity"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(w_fidelity=0, w_rank=0, w_consistency=0), "all loss weights are zero"),
        (dict(draws=1), "draws >= 2"),
        (dict(fidelity="huber"), "'mse' or 'l1'"),
        (dict(distortions=("fog",)), "unknown distortion"),
        (dict(p_clean=1.5), r"\[0, 1\]"),
        (dict(targets="human"), "distortions=\\(\\)"),
        (dict(sigma=0), "sigma"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**kwargs)


# ----------------------------------------------------------------------------- the loop


def test_teacher_stays_frozen_and_student_moves(tmp_path):
    model = MeanScore(1.0, 0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = finetune(model, _photos(), FinetuneConfig(steps=3, **TINY), tmp_path, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())
    assert result.student is not model
    assert not torch.equal(result.student.w.detach(), before["w"])


def test_two_steps_reduce_the_loss_on_a_closed_form_case(tmp_path):
    """Human targets 0.9 and 0.1 for constant photographs 0.7 and 0.2 under s = w mean + b
    (w = 1, b = 0): the scores start 0.2 and 0.1 off; two Adam steps move w and b towards the
    least-squares fit, and the loss of a fixed batch falls."""
    photos = [torch.full((3, 48, 48), 0.7), torch.full((3, 48, 48), 0.2)]
    scores = [0.9, 0.1]
    config = FinetuneConfig(steps=2, targets="human", distortions=(), w_rank=0, w_consistency=0,
                            **{**TINY, "lr": 0.05})
    model = MeanScore()
    images = torch.stack([p[:, :40, :40] for p in photos])
    noise = torch.zeros(2, *images.shape)
    target = torch.tensor(scores)
    before, _ = finetune_losses(model, images, target, noise, config)
    result = finetune(model, photos, config, tmp_path, scores=scores, progress=False)
    after, _ = finetune_losses(result.student, images, target, noise, config, 1.0)
    assert float(before) == pytest.approx((0.2**2 + 0.1**2) / 2)
    assert float(after) < float(before)


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    config = FinetuneConfig(steps=4, **TINY)
    whole = finetune(MeanScore(), _photos(), config, tmp_path / "whole", progress=False).student
    finetune(MeanScore(), _photos(), FinetuneConfig(steps=2, **TINY), tmp_path / "split", progress=False)
    resumed = finetune(MeanScore(), _photos(), config, tmp_path / "split", resume=True, progress=False).student
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    log = (tmp_path / "split" / "train_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["1", "2", "3", "4"]
    with pytest.raises(ValueError, match="other settings or another teacher"):
        finetune(MeanScore(), _photos(), FinetuneConfig(steps=4, **{**TINY, "lr": 0.5}), tmp_path / "split",
                 resume=True, progress=False)
    with pytest.raises(ValueError, match="other settings or another teacher"):
        finetune(MeanScore(2.0), _photos(), config, tmp_path / "split", resume=True, progress=False)


# ----------------------------------------------------------------------------- files and rows


def test_student_file_loads_without_pickle_and_carries_provenance(tmp_path):
    spec = _tiny_cnniqa(tmp_path / "teacher.pt")
    teacher = load_model(spec)
    config = FinetuneConfig(steps=2, **TINY)
    student = finetune(teacher, _photos(), config, tmp_path / "work", progress=False).student
    path = save_student(student, tmp_path / "student.pt", teacher=teacher, config=config, steps=2, photos=["x"])
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert raw["format"] == "certiqa-student-v1"
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    for loaded in (load_model(str(path)), load_model(f"cnniqa:{path}")):
        assert torch.allclose(loaded(x), student(x))
        assert not torch.allclose(loaded(x), teacher(x))
        prov = loaded.provenance
        assert prov["teacher"] == spec and prov["sigma"] == 0.1 and prov["seed"] == 0 and prov["steps"] == 2
        assert prov["teacher_sha256"] == describe_model(teacher)["model_sha256"]
        assert prov["recipe"] == config.fingerprint() and "new metric" in prov["certifies"]
        assert loaded.lower_better is True and loaded.score_range == (0.0, 100.0)
    assert load_model(spec).provenance is None


def test_any_module_student_is_a_torchscript_archive(tmp_path):
    teacher = LoadedModel(MeanScore(), spec="toy", file=None, lower_better=False, score_range=None, min_size=1)
    config = FinetuneConfig(steps=1, **TINY)
    student = finetune(teacher, _photos(), config, tmp_path / "work", progress=False).student
    path = save_student(student, tmp_path / "student.pt", teacher=teacher, config=config, steps=1)
    assert "constants.pkl" in {n.split("/", 1)[-1] for n in zipfile.ZipFile(path).namelist()}
    loaded = load_model(str(path))
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(loaded(x), student(x))
    assert loaded.provenance["teacher"] == "toy" and loaded.provenance["teacher_sha256"] is None
    assert loaded.lower_better is False


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "certiqa", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_command_writes_a_student_whose_rows_carry_the_teacher(tmp_path):
    spec = _tiny_cnniqa(tmp_path / "teacher.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, p in enumerate(_photos(2, 64)):
        save_image(p, photos / f"p{i}.png")
    out = tmp_path / "student.pt"
    done = _cli("finetune", "--model", spec, "--photos", str(photos), "--steps", "2", "--batch-size", "2",
                "--crop", "48", "--out", str(out), "--quiet", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    rows = tmp_path / "rows.csv"
    done = _cli("certify", str(photos / "p0.png"), "--model", str(out), "-n", "20", "--seed", "0", "--out", str(rows),
                "--quiet", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    import csv

    row = next(csv.DictReader(rows.open()))
    assert row["model"] == str(out)
    prov = json.loads(row["model_provenance"])
    assert prov["teacher"] == spec and prov["steps"] == 2 and prov["photos"] == [str(photos)]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--photos", "skimage"], "--out FILE is required"),
        (["--photos", "nowhere-folder", "--out", "s.pt"], "expected a folder of photographs or one of skimage, debian"),
        (["--photos", "skimage", "--out", "s.pt", "--resume"], "--resume found no checkpoint"),
        (["--photos", "skimage", "--out", "s.pt", "--draws", "1"], "draws >= 2"),
        (["--photos", "skimage", "--out", "s.pt", "--model", "missing.pt"], "no such file"),
    ],
)
def test_command_errors_are_one_line(tmp_path, monkeypatch, args, match):
    from certiqa.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", *args])
    message = str(exit_info.value.code)
    assert "\n" not in message
    assert message.startswith("certiqa finetune: error: ") or message.startswith("certiqa: error: ")
    assert match in message


def test_photo_folder_source(tmp_path):
    for i, p in enumerate(_photos(2, 32)):
        save_image(p, tmp_path / f"p{i}.png")
    photos, names = load_photos([str(tmp_path)], debian_dir=tmp_path / "debian")
    assert len(photos) == 2 and photos[0].shape == (3, 32, 32) and names[0].endswith("p0.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        load_photos([str(tmp_path / "empty")], debian_dir=tmp_path)


@pytest.mark.slow
def test_killed_command_resumes_to_the_uninterrupted_weights(tmp_path):
    """A real SIGKILL mid-run, then --resume: the same student file as an uninterrupted run."""
    spec = _tiny_cnniqa(tmp_path / "teacher.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, p in enumerate(_photos(3, 64)):
        save_image(p, photos / f"p{i}.png")
    common = ["finetune", "--model", spec, "--photos", str(photos), "--steps", "60", "--batch-size", "2",
              "--crop", "48", "--checkpoint-every", "5", "--quiet", "--device", "cpu", "--threads", "1"]
    assert _cli(*common, "--out", str(tmp_path / "whole.pt")).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.Popen([sys.executable, "-m", "certiqa", *common, "--out", str(tmp_path / "split.pt")],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "split.pt.train" / "train_log.csv"
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 13):
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "split.pt").exists()
    done = _cli(*common, "--out", str(tmp_path / "split.pt"), "--resume")
    assert done.returncode == 0, done.stderr
    whole = torch.load(tmp_path / "whole.pt", weights_only=True)["state_dict"]
    split = torch.load(tmp_path / "split.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(whole[k], split[k]) for k in whole)


# ----------------------------------------------------------------------------- evaluations


def test_smoothed_records_score_the_student_against_the_reference(tmp_path):
    from certiqa.denoisers.evaluation import smoothed_records
    from certiqa.denoisers.training import TrainImage
    from certiqa.smoothing import SmoothedIQA

    teacher, student = MeanScore(1.0, 0.0), MeanScore(2.0, 1.0)
    images = [TrainImage(p[:, :16, :16], None, f"im{i}") for i, p in enumerate(_photos(3))]
    rows = smoothed_records(student, images, 0.1, 16, 0.01, [0.05], reference=teacher, seed=3, batch_size=8,
                            cache_dir=tmp_path / "cache", progress=False)
    smoothed = SmoothedIQA(student, 0.1, n=16, alpha=0.01, batch_size=8, seed=3)
    for im, row in zip(images, rows):
        assert row["clean"] == pytest.approx(float(teacher(im.image[None])[0].detach()))
        assert row["median"] == pytest.approx(float(smoothed.predict(im.image[None])[0]))
    with pytest.raises(ValueError, match="other settings"):
        smoothed_records(student, images, 0.1, 16, 0.01, [0.05], reference=MeanScore(3.0), seed=3, batch_size=8,
                         cache_dir=tmp_path / "cache", progress=False)


def test_sweep_gains_a_student_row():
    from certiqa.denoisers.evaluation import smoothed_records, summarise
    from certiqa.denoisers.training import TrainImage
    from certiqa.sweep import format_sweep, sweep_sigma

    teacher, student = MeanScore(1.0, 0.0), MeanScore(2.0, 1.0)
    images = [TrainImage(p[:, :16, :16], None, f"im{i}") for i, p in enumerate(_photos(4))]
    table = sweep_sigma(teacher, images, [0.05, 0.1], students={0.1: student}, n=8, eps=[0.02], batch_size=8,
                        progress=False)
    assert [(r["sigma"], r["denoiser"]) for r in table] == [(0.05, "none"), (0.1, "none"), (0.1, "student")]
    rows = smoothed_records(student, images, 0.1, 8, 0.001, [0.02], reference=teacher, batch_size=8, progress=False)
    expected = summarise(rows, [0.02], lower_better=False)
    assert table[2]["srocc"] == pytest.approx(expected["srocc"])
    assert table[2]["shift"] == pytest.approx(expected["shift"])
    assert "| 0.1 | student |" in format_sweep(table, [0.02])
    with pytest.raises(ValueError, match="students given for sigma"):
        sweep_sigma(teacher, images, [0.05], students={0.1: student}, n=8, progress=False)


def test_evaluate_script_takes_a_student(tmp_path):
    spec = _tiny_cnniqa(tmp_path / "teacher.pt")
    teacher = load_model(spec)
    config = FinetuneConfig(steps=1, **TINY)
    student = finetune(teacher, _photos(), config, tmp_path / "work", progress=False).student
    path = save_student(student, tmp_path / "student.pt", teacher=teacher, config=config, steps=1)
    (tmp_path / "images").mkdir()
    for i, p in enumerate(_photos(3, 40, seed=5)):
        save_image(p, tmp_path / "images" / f"p{i}.png")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,score\n" + "".join(f"images/p{i}.png,\n" for i in range(3)))
    out = tmp_path / "eval.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "denoisers/evaluate.py", "--data", str(manifest), "--model", spec,
                           "--student", f"s0={path}", "--n", "4", "--batch-size", "4", "--bootstrap", "0", "--quiet",
                           "--out", str(out), "--device", "cpu"], capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    import csv

    rows = list(csv.DictReader(out.open()))
    plain = [r for r in rows if r["config"] == "plain"]
    s0 = [r for r in rows if r["config"] == "s0"]
    assert len(plain) == len(s0) == 3
    assert [r["clean"] for r in plain] == [r["clean"] for r in s0]  # the teacher's clean scores
    assert [r["median"] for r in plain] != [r["median"] for r in s0]
