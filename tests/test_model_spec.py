"""Model specs: every kind end to end through ``certiqa certify``, the metadata each carries,
the same scores from a CNNIQA state dict, its TorchScript archive and its exported program,
and the one-line error of every bad spec.

Two exports run once per module (torch.export takes seconds); everything else uses tiny
CNNIQAs (4 kernels, 8 hidden units), two small images and n = 20."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import textwrap

import pytest
import torch
from PIL import Image

from certiqa.cli import main
from certiqa.denoisers import DnCNN, save_denoiser
from certiqa.models import CNNIQA, LoadedModel, ModelSpecError, load_model, save_exported, save_scripted
from certiqa.models.default import DEFAULT_WEIGHTS
from certiqa.models.spec import _ExportedModule
from certiqa.options import (
    add_model_arguments,
    describe_model,
    load_model_from_args,
    require_metadata,
)

from conftest import REPO

# PyTorch 2.13 deprecates TorchScript (loading it still works); the trace test traces on purpose
pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

FACTORIES = '''
import torch
from torch import nn

from certiqa.models import CNNIQA


def cnniqa(kernels=4, hidden=8, seed=0, weights=None):
    torch.manual_seed(seed)
    model = CNNIQA(kernels, hidden, lower_better=False, score_range=(0.0, 1.0))
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
    return model


def brightness():
    return lambda x: x.mean(dim=(1, 2, 3))


def five_scores():
    return lambda x: x.flatten(1)[:, :5]


def needs_100():
    def score(x):
        if min(x.shape[-2:]) < 100:
            raise ValueError(f"needs 100x100 images, got {tuple(x.shape)}")
        return x.mean(dim=(1, 2, 3))
    return score


def raises():
    raise RuntimeError("no weights here")


def number():
    return 42
'''

BROKEN = '''
import certiqa_missing_dependency  # noqa: F401
'''

PYIQA = '''
"""A stand-in for pyiqa's interface: create_metric -> InferenceModel with lower_better,
score_range (a string) and metric_mode; as_loss=True reduces by loss_reduction."""
import torch
from torch import nn

DEFAULT_CONFIGS = {
    "brightness": {"metric_mode": "NR", "score_range": "~0, ~100"},
    "darkness": {"metric_mode": "NR", "lower_better": True, "score_range": "0, ~"},
    "lpips": {"metric_mode": "FR", "lower_better": True, "score_range": "0, 1"},
    "broken": {"metric_mode": "NR"},
}
CALLS = []


class InferenceModel(nn.Module):
    def __init__(self, metric_name, as_loss=False, loss_weight=None, loss_reduction="mean", device=None, gain=100.0):
        super().__init__()
        if metric_name == "broken":
            raise RuntimeError("cannot download the weights of broken")
        config = DEFAULT_CONFIGS[metric_name]
        self.metric_name = metric_name
        self.lower_better = config.get("lower_better", False)
        self.metric_mode = config["metric_mode"]
        self.score_range = config.get("score_range")
        self.as_loss = as_loss
        self.loss_reduction = loss_reduction
        self.scale = nn.Parameter(torch.tensor(float(gain)))

    def forward(self, target, ref=None):
        with torch.set_grad_enabled(self.as_loss):
            brightness = target.mean(dim=(1, 2, 3)).unsqueeze(1)  # (B, 1)
            output = self.scale * (brightness if self.metric_name == "brightness" else 1 - brightness)
        if self.as_loss and self.loss_reduction == "mean":
            return output.mean()
        return output


def create_metric(metric_name, as_loss=False, device=None, **kwargs):
    assert metric_name in DEFAULT_CONFIGS, f"Metric {metric_name} not implemented yet."
    CALLS.append({"name": metric_name, "as_loss": as_loss, "device": device, **kwargs})
    return InferenceModel(metric_name, as_loss=as_loss, device=device, **kwargs)
'''


class _Mean(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny CNNIQA as a state dict, a TorchScript archive (with and without certiqa.json),
    an exported program with dynamic batch/H/W (and a copy without certiqa.json, under a
    suffix that hides its kind), a program exported for batches of exactly 2, and the test's
    Python modules (factories, a module whose import fails, the pyiqa stand-in)."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = CNNIQA(4, 8, lower_better=False, score_range=(0.0, 1.0)).eval()
    paths = {"state": root / "c.pt", "ts": root / "c.ts", "raw_ts": root / "raw.pt", "pt2": root / "c.pt2",
             "pt2_bare": root / "bare.weights", "static": root / "static.pt2"}
    torch.save(model.state_dict(), paths["state"])
    save_scripted(model, paths["ts"])
    torch.jit.save(torch.jit.script(model), str(paths["raw_ts"]))
    save_exported(model, paths["pt2"], torch.rand(2, 3, 70, 70))
    with open(paths["pt2"], "rb") as fh:
        program = torch.export.load(fh)
    with open(paths["pt2_bare"], "wb") as fh:
        torch.export.save(program, fh)
    with open(paths["static"], "wb") as fh:
        torch.export.save(torch.export.export(_Mean(), (torch.rand(2, 3, 40, 40),)), fh)
    code = root / "code"
    (code / "pyiqa").mkdir(parents=True)
    (code / "spec_test_factories.py").write_text(FACTORIES)
    (code / "spec_test_broken.py").write_text(BROKEN)
    (code / "pyiqa" / "__init__.py").write_text(textwrap.dedent(PYIQA))
    paths["code"] = code
    paths["model"] = model
    return paths


@pytest.fixture
def user_code(files, monkeypatch):
    """The test's modules importable; forgotten again afterwards."""
    monkeypatch.syspath_prepend(str(files["code"]))
    yield files["code"]
    for name in ("pyiqa", "spec_test_factories", "spec_test_broken"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two small RGB images of different sizes (crops of the repository's example images)."""
    folder = tmp_path_factory.mktemp("imgs")
    Image.open(REPO / "examples" / "images" / "chelsea_clean.png").crop((0, 0, 96, 80)).save(folder / "a.png")
    Image.open(REPO / "examples" / "images" / "coffee_blur3.png").crop((20, 10, 92, 110)).save(folder / "b.png")
    return folder


def certify(images, tmp_path, *options: str) -> list[dict]:
    out = tmp_path / "rows.json"
    code = main(["certify", str(images), *options, "--n", "20", "--alpha", "0.1", "--seed", "0", "--quiet",
                 "--device", "cpu", "--out", str(out), "--overwrite"])
    assert code == 0
    return json.loads(out.read_text())


SPEC_KINDS = {
    "default": lambda f: "default",
    "cnniqa": lambda f: f"cnniqa:{f['state']}",
    "state dict file": lambda f: str(f["state"]),
    "torchscript": lambda f: str(f["ts"]),
    "exported program": lambda f: str(f["pt2"]),
    "exported, no suffix hint": lambda f: str(f["pt2_bare"]),
    "factory": lambda f: "spec_test_factories:cnniqa(kernels=4, hidden=8, seed=1)",
    "factory, plain function": lambda f: "spec_test_factories:brightness",
    "pyiqa": lambda f: "pyiqa:brightness",
}


@pytest.mark.parametrize("kind", list(SPEC_KINDS))
def test_every_spec_kind_certifies_two_images(kind, files, user_code, images, tmp_path):
    rows = certify(images, tmp_path, "--model", SPEC_KINDS[kind](files))
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == ["a.png", "b.png"]
    for row in rows:
        assert row["lower"] <= row["median"] <= row["upper"] and row["n"] == 20


def test_state_dict_torchscript_and_exported_program_give_the_same_scores(files, images, tmp_path):
    """The archives run the same arithmetic as the eager CNNIQA (the exported program in one
    convolution over all patches instead of chunks of 128): equal to float rounding."""
    runs = {kind: certify(images, tmp_path, "--model", SPEC_KINDS[kind](files))
            for kind in ("cnniqa", "torchscript", "exported program")}
    for kind in ("torchscript", "exported program"):
        for ours, ref in zip(runs[kind], runs["cnniqa"]):
            for key in ("median", "lower", "upper"):
                assert ours[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), (kind, key)
    eager, archives = files["model"], [load_model(str(files["ts"])), load_model(str(files["pt2"]))]
    with torch.inference_mode():
        for shape in [(3, 3, 33, 33), (2, 3, 65, 97), (20, 3, 100, 100)]:  # 20 x 9 patches: more than one chunk
            x = torch.rand(shape)
            for model in archives:
                torch.testing.assert_close(model(x), eager(x), rtol=1e-5, atol=1e-6)


def test_a_trace_of_cnniqa_generalises_to_other_sizes():
    """While tracing, CNNIQA convolves all patches at once, so the trace holds no chunk count."""
    torch.manual_seed(0)
    model = CNNIQA(4, 8).eval()
    traced = torch.jit.trace(model, torch.rand(2, 3, 70, 70))
    for shape in [(1, 3, 33, 40), (20, 3, 100, 100)]:
        x = torch.rand(shape)
        torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-6)


def test_metadata_travels_with_each_kind(files, user_code):
    def meta(model: LoadedModel):
        return model.lower_better, model.score_range, model.min_size

    assert meta(load_model("default")) == (False, (0.0, 100.0), 33)
    assert meta(load_model(f"cnniqa:{files['state']}")) == (True, (0.0, 100.0), 33)  # CNNIQA's LIVE DMOS defaults
    assert meta(load_model(str(files["ts"]))) == (False, (0.0, 1.0), 33)  # certiqa.json
    assert meta(load_model(str(files["raw_ts"]))) == (False, (0.0, 1.0), 33)  # the scripted module's attributes
    assert meta(load_model(str(files["pt2"]))) == (False, (0.0, 1.0), 33)  # certiqa.json
    assert meta(load_model(str(files["pt2_bare"]))) == (None, None, 33)  # min_size from the export's H, W range
    assert meta(load_model("spec_test_factories:cnniqa")) == (False, (0.0, 1.0), 33)
    assert meta(load_model("spec_test_factories:brightness")) == (None, None, 1)
    assert meta(load_model("pyiqa:brightness")) == (False, (0.0, 100.0), 1)  # '~0, ~100'
    assert meta(load_model("pyiqa:darkness")) == (True, None, 1)  # '0, ~': no upper end
    import pyiqa

    assert pyiqa.CALLS[-1] == {"name": "darkness", "as_loss": True, "device": torch.device("cpu"),
                               "loss_reduction": "none"}
    gained = load_model("pyiqa:brightness(gain=2.5)")  # options reach create_metric as keyword literals
    assert pyiqa.CALLS[-1] == {"name": "brightness", "as_loss": True, "device": torch.device("cpu"),
                               "loss_reduction": "none", "gain": 2.5}
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(gained(x).flatten(), 2.5 * x.mean(dim=(1, 2, 3)))
    load_model("pyiqa: brightness ( gain = 1 ) ")
    assert pyiqa.CALLS[-1]["gain"] == 1 and pyiqa.CALLS[-1]["name"] == "brightness"
    overridden = load_model(str(files["ts"]), lower_better=True, score_range=(1, 5), min_size=40)
    assert meta(overridden) == (True, (1.0, 5.0), 40)


def test_options_override_and_require_metadata(user_code, images, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="script.py")
    add_model_arguments(parser)
    args = parser.parse_args(["--model", "spec_test_factories:brightness"])
    model = load_model_from_args(args)
    with pytest.raises(SystemExit, match=r"script.py: error: model spec 'spec_test_factories:brightness' does not "
                                         r"state its lower_better or score_range.*--lower-better or --higher-better "
                                         r"and --score-range LO HI"):
        require_metadata(args, model, "lower_better", "score_range")
    args = parser.parse_args(["--model", "spec_test_factories:brightness", "--higher-better", "--score-range", "0", "1"])
    model = load_model_from_args(args)
    require_metadata(args, model, "lower_better", "score_range")
    assert (model.lower_better, model.score_range) == (False, (0.0, 1.0))
    # --min-size reaches the image reader: the 72-pixel-wide image is refused, the other certified
    out = tmp_path / "r.json"
    code = main(["certify", str(images), "--model", "spec_test_factories:brightness", "--min-size", "80", "--n", "20",
                 "--quiet", "--out", str(out)])
    assert code == 1 and "smaller than the 80x80 the model needs" in capsys.readouterr().err
    assert [r["path"].rsplit("/", 1)[1] for r in json.loads(out.read_text())] == ["a.png"]


def test_describe_model_gives_provenance(files, user_code):
    digest = hashlib.sha256(files["ts"].read_bytes()).hexdigest()
    assert describe_model(str(files["ts"])) == {"model": str(files["ts"]), "model_sha256": digest,
                                                 "lower_better": False, "score_range": [0.0, 1.0],
                                                 "randomized": False}
    assert describe_model("default")["model_sha256"] == hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest()
    loaded = load_model("spec_test_factories:brightness", lower_better=True)
    assert describe_model(loaded) == {"model": "spec_test_factories:brightness", "model_sha256": None,
                                      "lower_better": True, "score_range": None, "randomized": False}
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    described = describe_model(parser.parse_args(["--weights", str(files["state"])]))
    assert described["model"] == f"cnniqa:{files['state']}"
    assert described["model_sha256"] == hashlib.sha256(files["state"].read_bytes()).hexdigest()


def test_trainable_module_for_nt(files, user_code):
    assert isinstance(load_model(f"cnniqa:{files['state']}").trainable(), CNNIQA)
    assert load_model(str(files["ts"])).trainable() is not None
    with pytest.raises(ModelSpecError, match="an exported program cannot be trained"):
        load_model(str(files["pt2"])).trainable()
    with pytest.raises(ModelSpecError, match="gives a function without trainable parameters"):
        load_model("spec_test_factories:brightness").trainable()


def test_exported_program_moves_its_constants_with_the_model(files):
    """The exported CNNIQA holds its luma weights as a lifted constant, which a plain .to()
    would leave behind; the meta device stands in for CUDA (mixing devices fails the same way)."""
    model = load_model(str(files["pt2"]))
    assert model.to("cpu").model.module is model.model.module  # already there: nothing rebuilt
    model = model.to("meta")
    assert model(torch.rand(2, 3, 64, 64, device="meta")).shape == (2,)


def test_exported_module_refuses_other_static_sizes_in_one_line(files):
    with open(files["static"], "rb") as fh:
        module = _ExportedModule(torch.export.load(fh), {0: 2, 2: 40, 3: 40}, "the exported program 'm.pt2'")
    assert module(torch.rand(2, 3, 40, 40)).shape == (2,)
    with pytest.raises(ValueError, match=r"exported for inputs of shape \(2, \*, 40, 40\), got \(2, 3, 41, 40\)"):
        module(torch.rand(2, 3, 41, 40))


def _bad(spec: str, match: str, **overrides) -> None:
    with pytest.raises(ModelSpecError) as caught:
        load_model(spec, **overrides)
    message = str(caught.value)
    assert message.startswith(f"model spec {spec!r}: ") and "\n" not in message
    assert re.search(match, message), message


def test_bad_spec_messages(files, user_code, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    torch.save(CNNIQA(4, 8), tmp_path / "pickled.pt")  # a whole pickled module
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pt")
    save_denoiser(DnCNN(depth=3, features=8, batch_norm=False), tmp_path / "den.pt")
    _bad(str(tmp_path / "missing.pt"), r"no such file, and not of the form module\.sub:factory\. Expected default")
    _bad(f"cnniqa:{tmp_path / 'missing.pt'}", r"no such file '.*missing\.pt'")
    _bad(str(tmp_path), r"is a folder, not a model file")
    _bad(str(tmp_path / "notes.txt"), r"none of the model file formats \(tried: TorchScript archive, exported program, "
                                      r"torch\.save state dict\)")
    _bad(str(tmp_path / "pickled.pt"), r"pickle of Python objects.*never unpickles objects \(torch\.load\(weights_only")
    _bad(str(tmp_path / "other.pt"), r"not a CNNIQA state dict \(found \['w'\]\).*factory spec")
    _bad(f"cnniqa:{tmp_path / 'other.pt'}", r"not a CNNIQA state dict \(no conv1\.weight")
    _bad(str(tmp_path / "den.pt"), r"certiqa denoiser file; pass it with --denoiser")
    _bad(str(files["static"]), r"exported for batches of exactly 2 images.*dynamic batch dimension")
    _bad("no_such_module_xyz:build", r"cannot import module 'no_such_module_xyz' \(ModuleNotFoundError: No module "
                                     r"named 'no_such_module_xyz'\)")
    _bad("spec_test_broken:build", r"cannot import module 'spec_test_broken' \(ModuleNotFoundError: No module named "
                                   r"'certiqa_missing_dependency'\)")
    _bad("spec_test_factories:nothing", r"'spec_test_factories' has no attribute 'nothing'")
    _bad("spec_test_factories:raises", r"the factory spec_test_factories:raises raised RuntimeError: no weights here")
    _bad("spec_test_factories:cnniqa(colour=1)", r"raised TypeError: .*unexpected keyword argument 'colour'")
    _bad("spec_test_factories:number", r"returned a int; expected an nn\.Module or a callable")
    _bad("spec_test_factories:five_scores", r"shape \(B,\) or \(B, 1\); for B = 2 it returned shape \(2, 5\) "
                                            r"on a probe batch of random images of shape \(2, 3, 64, 64\)\.")
    _bad("spec_test_factories:needs_100", r"failed on a probe batch .*\(ValueError: needs 100x100 images.*--min-size")
    assert load_model("spec_test_factories:needs_100", min_size=100).min_size == 100  # the fix the message names
    _bad("spec_test_factories:cnniqa(kernels=)", r"cannot parse the factory arguments \(kernels=\)")
    _bad("spec_test_factories:cnniqa(kernels=__import__('os').getpid())", r"Python literal values")
    _bad(f"cnniqa:{files['state']}", r"score_range from the arguments must be a pair", score_range=(1.0, 0.0))
    _bad(f"cnniqa:{files['state']}", r"min_size from the arguments must be an integer >= 1", min_size=0)


def test_bad_pyiqa_specs(user_code, monkeypatch):
    _bad("pyiqa:nope", r"pyiqa has no metric 'nope' \(Metric nope not implemented yet\.\).*list_models")
    _bad("pyiqa:lpips", r"full-reference\) metric; certiqa certifies no-reference models")
    _bad("pyiqa:broken", r"create_metric\('broken', as_loss=True\) raised RuntimeError: cannot download.*"
                         r"pretrained_model_path='FILE'.*pretrained=False")
    _bad("pyiqa:brightness(colour=1)", r"create_metric\('brightness', as_loss=True, colour=1\) raised TypeError: "
                                       r".*unexpected keyword argument 'colour'$")
    _bad("pyiqa:brightness(gain=)", r"cannot parse the pyiqa arguments \(gain=\)")
    _bad("pyiqa:brightness(gain=__import__('os').getpid())", r"Python literal values")
    _bad("pyiqa:brightness(2.5)", r"keyword arguments only \(name=value\), got the positional value 2\.5")
    _bad("pyiqa:brightness(as_loss=False)", r"'as_loss' is set by certiqa")
    _bad("pyiqa:brightness(device='cuda')", r"'device' is set by certiqa")
    _bad("pyiqa:(gain=1)", r"expected pyiqa:NAME or pyiqa:NAME\(name=value, \.\.\.\)")
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # as if pyiqa were not installed
    _bad("pyiqa:brightness", r"pyiqa is not installed \(ModuleNotFoundError.*pip install pyiqa")
