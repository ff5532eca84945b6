"""Loading never runs code from a model, denoiser or weights file (docs/security.md).

Each payload is a real pickle whose ``__reduce__`` creates a marker file; the controls show
that torch itself runs the payload (or resolves the dangerous name) where certiqa refuses it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from certiqa.cli import main
from certiqa.denoisers import DnCNN, load_denoiser, save_denoiser
from certiqa.loading import exported_program_buffer, read_checkpoint, torchscript_buffer
from certiqa.models import ModelSpecError, load_model, save_exported, save_scripted
from certiqa.models.cnniqa import CNNIQA, load_state_dict_file

from conftest import REPO


class _Payload:
    """Unpickling it evaluates ``open(marker, 'w')`` and returns ``result`` (a Python expression)."""

    def __init__(self, marker: Path, result: str) -> None:
        self.code = f"(open({str(marker)!r}, 'w').close(), {result})[1]"

    def __reduce__(self):
        return (eval, (self.code,))


RESULTS = ["(1,)", "1"]  # a tuple (what torch expects of sample inputs) and an int


def payload(marker: Path, result: str) -> bytes:
    return pickle.dumps(_Payload(marker, result), protocol=2)


def saved_payload(marker: Path, result: str) -> bytes:
    """A torch.save zip archive whose data.pkl is the payload."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, buffer)
    return rewritten(buffer.getvalue(), {"data.pkl": payload(marker, result)})


def rewritten(data: bytes, members: dict[str, bytes]) -> bytes:
    """The zip archive ``data`` with the members named (relative to its top folder) replaced or added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as archive, zipfile.ZipFile(out, "w") as new:
        root = archive.namelist()[0].split("/", 1)[0] + "/"
        for info in archive.infolist():
            new.writestr(info, members.get(info.filename[len(root):], archive.read(info)))
        for name, content in members.items():
            if root + name not in archive.namelist():
                new.writestr(root + name, content)
    return out.getvalue()


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.register_buffer("offset", torch.tensor([0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x).mean(dim=(1, 2, 3)) + self.offset)


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("archives")
    torch.manual_seed(0)
    model = Tiny().eval()
    save_exported(model, folder / "m.pt2", torch.rand(2, 3, 16, 16))
    save_scripted(model, folder / "m.ts")
    return {"exported": (folder / "m.pt2").read_bytes(), "torchscript": (folder / "m.ts").read_bytes()}


def _members(data: bytes) -> list[str]:
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    return [name.split("/", 1)[1] for name in names]


EXTRA_PT2 = ["data/weights/model.pt", "data/constants/model.pt", "data/constants/custom_obj_0",
             "data/constants/opaque_obj_0", "data/aotinductor/model/model.pt", "serialized_state_dict.pt"]
EXTRA_TS = ["bytecode.pkl", "data/extra.pkl"]


def _loads_safely(path: Path, marker: Path) -> None:
    """load_model(path) either loads or raises a one-line ModelSpecError, and the payload never runs."""
    try:
        load_model(str(path))
    except ModelSpecError as err:
        assert "\n" not in str(err) and "weights_only=False" not in str(err)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["exported", "torchscript"])
@pytest.mark.parametrize("result", RESULTS)
def test_a_payload_in_any_member_never_runs(archives, kind, result, tmp_path):
    marker = tmp_path / "marker"
    members = _members(archives[kind]) + (EXTRA_PT2 if kind == "exported" else EXTRA_TS)
    for member in members:
        path = tmp_path / f"bad-{kind}"
        path.write_bytes(rewritten(archives[kind], {member: payload(marker, result)}))
        _loads_safely(path, marker)


@pytest.mark.parametrize("member", ["data/constants/custom_obj_0", "data/weights/model.pt", "data/aotinductor/x.so"])
def test_members_torch_would_unpickle_are_refused_by_name(archives, member, tmp_path):
    path = tmp_path / "bad.pt2"
    path.write_bytes(rewritten(archives["exported"], {member: payload(tmp_path / "marker", "1")}))
    with pytest.raises(ModelSpecError, match=rf"holds '{member}' \(.*\), which certiqa does not load because it "
                                             r"could run code; export the model again"):
        load_model(str(path))


def test_the_sample_inputs_payload_runs_in_torch_but_not_in_certiqa(archives, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "bad.pt2"
    path.write_bytes(rewritten(archives["exported"], {"data/sample_inputs/model.pt": payload(marker, "(1,)")}))
    with pytest.raises(Exception):  # control: torch's weights_only=False fallback unpickles it
        torch.export.load(io.BytesIO(path.read_bytes()))
    assert marker.exists()
    marker.unlink()
    scores = load_model(str(path))(torch.rand(2, 3, 20, 24))  # certiqa drops the sample inputs unread
    assert scores.shape == (2,) and not marker.exists()


def test_a_pickled_weight_entry_is_refused(archives, tmp_path):
    marker = tmp_path / "marker"
    config = json.loads(zipfile.ZipFile(io.BytesIO(archives["exported"])).read(
        "archive/data/weights/model_weights_config.json"))
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    file = config["config"][first]["path_name"]
    path = tmp_path / "bad.pt2"
    path.write_bytes(rewritten(archives["exported"], {"data/weights/model_weights_config.json":
                                                      json.dumps(config).encode(), f"data/weights/{file}":
                                                      payload(marker, "torch.zeros(1)")}))
    with pytest.raises(Exception):  # control: torch.load(weights_only=False) of the entry
        torch.export.load(io.BytesIO(path.read_bytes()))
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelSpecError, match=rf"{first}' \(a pickled tensor\)"):
        load_model(str(path))
    assert not marker.exists()


def _program(archives) -> dict:
    return json.loads(zipfile.ZipFile(io.BytesIO(archives["exported"])).read("archive/models/model.json"))


def _with_program(archives, program: dict, path: Path) -> Path:
    path.write_bytes(rewritten(archives["exported"], {"models/model.json": json.dumps(program).encode()}))
    return path


def test_python_in_a_shape_expression_is_refused(archives, tmp_path):
    marker = tmp_path / "marker"
    text = json.dumps(_program(archives))
    symbol = "Symbol('s77', positive=True, integer=True)"
    assert symbol in text
    evil = f"Add(Integer(0), __import__('builtins').open({str(marker)!r}, 'w').close() or {symbol})"
    path = tmp_path / "bad.pt2"
    path.write_bytes(rewritten(archives["exported"], {"models/model.json": text.replace(
        json.dumps(symbol)[1:-1], json.dumps(evil)[1:-1], 1).encode()}))
    try:  # control: torch parses shape expressions with sympy.sympify, which evaluates Python
        torch.export.load(io.BytesIO(path.read_bytes()))
    except Exception:
        pass
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelSpecError, match=r"the shape expression .* is not a plain sympy expression"):
        load_model(str(path))
    assert not marker.exists()


def test_python_in_the_guard_code_is_refused(archives, tmp_path):
    marker = tmp_path / "marker"
    program = _program(archives)
    program["guards_code"] = [*program["guards_code"], f"__import__('builtins').open({str(marker)!r}, 'w') is not 0"]
    path = _with_program(archives, program, tmp_path / "bad.pt2")
    torch.export.load(io.BytesIO(path.read_bytes())).module()(torch.rand(2, 3, 16, 16))  # control: guards are Python
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelSpecError, match=r"the input guard .* is not arithmetic on input sizes"):
        load_model(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("target", ["torch.serialization.os.system", "builtins.eval", "#custom:op",
                                    "torch.ops.aten.__class__.x.y"])
def test_a_call_target_that_is_not_a_torch_operator_is_refused(archives, target, tmp_path):
    from torch._export.serde.serialize import GraphModuleDeserializer

    if target.startswith("torch.serialization"):  # control: torch resolves any attribute chain under torch
        assert GraphModuleDeserializer().deserialize_operator(target) is os.system
    program = _program(archives)
    node = next(n for n in program["graph_module"]["graph"]["nodes"] if n["target"].startswith("torch.ops.aten"))
    node["target"] = target
    path = _with_program(archives, program, tmp_path / "bad.pt2")
    with pytest.raises(ModelSpecError, match=rf"calls {target!r}, which is not a registered torch operator"):
        load_model(str(path))


@pytest.mark.parametrize("result", RESULTS)
def test_torchscript_pickles_name_torchscript_types_only(archives, result, tmp_path):
    marker = tmp_path / "marker"
    for member in ("data.pkl", "constants.pkl"):
        path = tmp_path / "bad.ts"
        path.write_bytes(rewritten(archives["torchscript"], {member: payload(marker, result)}))
        with pytest.raises(RuntimeError, match="Unknown type name"):  # control: TorchScript's own unpickler
            torch.jit.load(io.BytesIO(path.read_bytes()))
        with pytest.raises(ValueError, match=rf"holds '{member}' \(a pickle naming '__builtin__ eval', not a "
                                             "TorchScript type\\)"):
            torchscript_buffer(path)
        assert not marker.exists()


def test_legitimate_archives_still_load_and_certify(archives, tmp_path, capsys):
    x = torch.rand(3, 3, 20, 24)
    torch.manual_seed(0)
    reference = Tiny().eval()(x)
    for kind, suffix in (("exported", "pt2"), ("torchscript", "ts")):
        path = tmp_path / f"m.{suffix}"
        path.write_bytes(archives[kind])
        assert torch.allclose(load_model(str(path))(x), reference, atol=1e-6)
        Image.new("RGB", (24, 20), (90, 120, 60)).save(tmp_path / "a.png")
        out = tmp_path / f"{kind}.csv"
        assert main(["certify", str(tmp_path / "a.png"), "--model", str(path), "--higher-better", "--score-range",
                     "0", "1", "--n", "20", "--alpha", "0.1", "--quiet", "--out", str(out)]) == 0
        assert "a.png" in out.read_text()
    assert isinstance(exported_program_buffer(tmp_path / "m.pt2"), io.BytesIO)


# ----------------------------------------------------------------------------- torch.save files and the CLI


@pytest.mark.parametrize("result", RESULTS)
def test_a_payload_as_weights_or_denoiser_never_runs(result, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    for data in (saved_payload(marker, result), payload(marker, result)):  # zip archive and legacy pickle
        path.write_bytes(data)
        for load in (lambda p: read_checkpoint(p, "x"), load_denoiser, lambda p: load_model(f"cnniqa:{p}"),
                     lambda p: load_model(str(p)), CNNIQA.from_file, lambda p: load_state_dict_file(p, {}, "x")):
            with pytest.raises(ValueError, match=r"is a pickle of Python objects \((builtins\.)?eval\)") as caught:
                load(path)
            assert "\n" not in str(caught.value) and "weights_only=False" not in str(caught.value)
        assert not marker.exists()


def _image(tmp_path: Path) -> str:
    Image.new("RGB", (40, 40), (100, 80, 60)).save(tmp_path / "a.png")
    return str(tmp_path / "a.png")


@pytest.mark.parametrize("option", ["--model", "--weights", "--denoiser"])
def test_the_cli_refuses_payloads_in_one_line(archives, option, tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt2"
    if option == "--model":
        evil.write_bytes(rewritten(archives["exported"], {"data/sample_inputs/model.pt": payload(marker, "(1,)"),
                                                          "data/constants/custom_obj_0": payload(marker, "1")}))
    else:
        evil.write_bytes(saved_payload(marker, "(1,)"))
    done = subprocess.run([sys.executable, "-m", "certiqa", "certify", _image(tmp_path), option, str(evil), "--n", "10",
                           "--quiet"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("certiqa: error: ") and "Traceback" not in done.stderr, done.stderr
    assert "could run code" in lines[0] or "never unpickles objects" in lines[0]
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"hello weights\n", b"\x80\x02 not a real pickle", os.urandom(4096),
                                     b"PK\x03\x04 not a zip"])
@pytest.mark.parametrize("option", ["--weights", "--denoiser"])
def test_foreign_files_say_what_the_file_should_be(content, option, tmp_path):
    (tmp_path / "w.bin").write_bytes(content)
    with pytest.raises(SystemExit) as caught:
        main(["certify", _image(tmp_path), option, str(tmp_path / "w.bin"), "--quiet"])
    message = str(caught.value)
    assert "\n" not in message and "weights_only" not in message.replace("weights_only=True", "")
    expected = ("a state dict written by torch.save(model.state_dict())" if option == "--weights"
                else "a denoiser file written by certiqa.denoisers.save_denoiser")
    assert message.endswith(f"expected {expected}."), message


def test_a_denoiser_written_by_save_denoiser_still_loads(tmp_path):
    save_denoiser(DnCNN(depth=3, features=8, batch_norm=False), tmp_path / "d.pt", sigma=0.1)
    assert load_denoiser(tmp_path / "d.pt").meta == {"sigma": 0.1}


@pytest.mark.parametrize("kind, member", [("exported", "models/model.json"), ("torchscript", "data.pkl")])
def test_an_archive_naming_a_member_twice_is_refused(archives, kind, member, tmp_path):
    """torch's reader and zipfile could each pick another of two members of one name."""
    marker = tmp_path / "marker"
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archives[kind])) as archive, zipfile.ZipFile(out, "w") as new:
        root = archive.namelist()[0].split("/", 1)[0] + "/"
        for info in archive.infolist():
            new.writestr(info, archive.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            new.writestr(root + member, payload(marker, "1"))
    path = tmp_path / "twice"
    path.write_bytes(out.getvalue())
    with pytest.raises(ModelSpecError, match=rf"holds members of the same name twice \(\['{root}{member}'\]\)"):
        load_model(str(path))
    assert not marker.exists()


def test_an_unreadable_model_or_denoiser_file_says_permission_denied(archives, tmp_path, monkeypatch):
    import builtins
    import errno

    path = tmp_path / "locked.pt2"
    path.write_bytes(archives["exported"])
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):  # chmod 000 does not stop root (as in CI)
        if os.fspath(file) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    for load in (lambda: load_model(str(path)), lambda: load_model(f"cnniqa:{path}"), lambda: load_denoiser(path)):
        with pytest.raises(ValueError, match=rf"file '{path}' cannot be read: permission denied; check that this "
                                             r"user may read it\.$"):
            load()
