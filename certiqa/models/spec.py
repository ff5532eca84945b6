"""Load any NR-IQA model from one string, the *model spec*, with its metadata.

Spec kinds (see :data:`MODEL_SPEC_HELP`):

- ``default``: certiqa's embedded model (:func:`certiqa.models.default_model`);
- ``cnniqa:FILE``: a CNNIQA state dict (kernels and hidden width read from the file);
- ``FILE``: a TorchScript archive (``torch.jit.save``), an exported program
  (``torch.export.save``) or a CNNIQA state dict, told apart by the archive's members,
  not by the suffix;
- ``module.sub:factory`` or ``module.sub:factory(name=value, ...)``: an importable
  callable, called with Python literal arguments (parsed by ``ast.literal_eval``),
  returning an ``nn.Module`` or a callable;
- ``pyiqa:NAME`` or ``pyiqa:NAME(name=value, ...)``: ``pyiqa.create_metric(NAME,
  as_loss=True, loss_reduction='none', name=value, ...)`` with Python literal keyword
  arguments (e.g. ``pretrained_model_path='w.pth'`` or ``pretrained=False``), imported
  only when asked for.

Every loaded model is a :class:`LoadedModel` that carries ``lower_better``,
``score_range`` and ``min_size`` (from the arguments of :func:`load_model`, else from
the file's ``certiqa.json`` metadata, else from the model's own attributes; ``None``
where unknown, ``min_size`` 1) and ``randomized``: whether two calls on the same probe
batch gave different scores (random crops, dropout left on). Loading never unpickles Python objects and never runs Python
from the file: every file goes through :mod:`certiqa.loading` (state dicts with
``torch.load(weights_only=True)``, archives checked member by member and read from memory;
see ``docs/security.md``). A probe on two random images checks the output shape before returning.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .._checks import check_scores
from ..loading import archive_kind, exported_program_buffer, read_checkpoint, torchscript_buffer
from .cnniqa import CNNIQA, check_state_dict
from .default import DEFAULT_WEIGHTS, default_model

__all__ = [
    "MODEL_SPEC_HELP",
    "METADATA_FILE",
    "ModelSpecError",
    "LoadedModel",
    "load_model",
    "save_scripted",
    "save_exported",
]

MODEL_SPEC_HELP = (
    "default | cnniqa:FILE | FILE (TorchScript archive, exported program .pt2 or CNNIQA state dict) | "
    "module.sub:factory | module.sub:factory(name=value, ...) | pyiqa:NAME | pyiqa:NAME(name=value, ...)"
)
METADATA_FILE = "certiqa.json"  # extra file of TorchScript archives and exported programs
PROBE_SIZE = 64  # side of the random probe images (at least the model's min_size)

_NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_FACTORY = re.compile(rf"^(?P<module>{_NAME}):(?P<attr>{_NAME})(?:\((?P<args>.*)\))?$", re.DOTALL)
_PYIQA = re.compile(r"^(?P<name>[^()]+?)(?:\((?P<args>.*)\))?$", re.DOTALL)
_PYIQA_RESERVED = ("metric_name", "as_loss", "loss_reduction", "device")  # set by certiqa
_CNNIQA_KEYS = {f"{layer}.{kind}" for layer in ("conv1", "fc1", "fc2", "fc3") for kind in ("weight", "bias")}


class ModelSpecError(ValueError):
    """A model spec that cannot be loaded; the message is one line naming the spec,
    what was tried and what is expected."""

    def __init__(self, spec: str, detail: str) -> None:
        super().__init__(f"model spec {spec!r}: {detail}")


class LoadedModel(nn.Module):
    """An NR-IQA model with its metadata: images (B, 3, H, W) in [0, 1] -> scores (B,) or (B, 1).

    Attributes:
        model: the loaded ``nn.Module`` (registered, so ``.to()``, ``.parameters()`` and
            mode switches reach it) or plain callable.
        spec: the model spec it was loaded from.
        file: the file it was read from (``None`` for factories and pyiqa).
        lower_better: whether a lower score means better quality (``None``: unknown).
        score_range: nominal (lo, hi) of the scores (``None``: unknown).
        min_size: smallest image side the model accepts (1 when unknown).
        randomized: whether the model has randomness of its own: two calls on the same
            probe batch gave different scores (see :mod:`certiqa.smoothing` for what is
            certified then and how its randomness is seeded).
        provenance: where a fine-tuned model comes from (the file's ``provenance``
            metadata: teacher, recipe, ...; ``None`` for other models).
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        *,
        spec: str,
        file: Path | None,
        lower_better: bool | None,
        score_range: tuple[float, float] | None,
        min_size: int,
        randomized: bool = False,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.file = file
        self.lower_better = lower_better
        self.score_range = score_range
        self.min_size = min_size
        self.randomized = randomized
        self.provenance = provenance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def trainable(self) -> nn.Module:
        """The loaded ``nn.Module`` itself, for training its parameters (NT fine-tuning); a
        ModelSpecError when there is none: a plain callable, an exported program (its graph
        is fixed in the mode it was exported in), or a module without trainable parameters."""
        model = self.model
        if isinstance(model, _ExportedModule):
            raise ModelSpecError(self.spec, "an exported program cannot be trained (its graph is fixed in eval mode); "
                                            "use cnniqa:FILE, a TorchScript archive or a module:factory spec.")
        if not isinstance(model, nn.Module) or not any(p.requires_grad for p in model.parameters()):
            raise ModelSpecError(self.spec, f"gives a {type(model).__name__} without trainable parameters; training "
                                            "needs an nn.Module with parameters.")
        return model

    def extra_repr(self) -> str:
        return (f"spec={self.spec!r}, lower_better={self.lower_better}, score_range={self.score_range}, "
                f"min_size={self.min_size}, randomized={self.randomized}")


class _ExportedModule(nn.Module):
    """The module of a ``torch.export`` program, with

    - a clear ValueError for inputs whose static dimensions differ from the exported ones
      (instead of a failed guard);
    - device moves through ``torch.export.passes.move_to_device_pass`` (a plain ``.to()``
      leaves the program's lifted constants and device arguments behind);
    - mode switches that only set flags (exported modules refuse ``train()`` / ``eval()``;
      their graph keeps the mode it was exported in).
    """

    def __init__(self, program: torch.export.ExportedProgram, fixed: dict[int, int], where: str) -> None:
        super().__init__()
        self.program = _program_on(program, torch.device("cpu"))
        self.device = torch.device("cpu")
        self.module = self.program.module()
        self.fixed = fixed
        self.where = where

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "_ExportedModule":
        device = fn(torch.zeros(())).device  # where this conversion sends tensors
        if device != self.device:
            self.program = _program_on(self.program, device)
            self.module = self.program.module()
            self.device = device
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> "_ExportedModule":
        for m in self.modules():
            m.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wrong = {d: x.shape[d] for d, size in self.fixed.items() if x.ndim == 4 and x.shape[d] != size}
        if x.ndim != 4 or wrong:
            want = ", ".join(str(self.fixed[d]) if d in self.fixed else "*" for d in range(4))
            raise ValueError(
                f"{self.where} was exported for inputs of shape ({want}), got {tuple(x.shape)}; export it "
                "with dynamic batch, height and width (certiqa.models.save_exported) or resize the images."
            )
        return self.module(x)


def _program_on(program: torch.export.ExportedProgram, device: torch.device) -> torch.export.ExportedProgram:
    """``program`` with its weights, constants and device arguments on ``device``."""
    tensors = [*program.state_dict.values(), *program.constants.values()]
    if all(not isinstance(t, torch.Tensor) or t.device == device for t in tensors):
        return program
    from torch.export.passes import move_to_device_pass

    return move_to_device_pass(program, device)


# ----------------------------------------------------------------------------- parsing


def _split_prefix(spec: str, prefix: str) -> str | None:
    return spec[len(prefix):] if spec.startswith(prefix) else None


def _parse_arguments(spec: str, text: str, what: str = "factory") -> tuple[list[Any], dict[str, Any]]:
    """``a, b=2, c='x'`` -> ([a], {b: 2, c: 'x'}) with every value a Python literal; ``what``
    names the call in errors."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if not isinstance(call, ast.Call):
            raise SyntaxError("not an argument list")
        if any(k.arg is None for k in call.keywords):
            raise ValueError("**kwargs is not allowed")
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError, TypeError) as err:
        raise ModelSpecError(
            spec, f"cannot parse the {what} arguments ({text}) ({type(err).__name__}: {err}); expected "
            "name=value, ... with Python literal values (numbers, strings, True/False/None, tuples, lists, dicts)."
        ) from None
    return args, kwargs


# ----------------------------------------------------------------------------- files


def _read_metadata(spec: str, raw: str | bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
    except ValueError as err:
        raise ModelSpecError(spec, f"the archive's {METADATA_FILE} is not a JSON object ({err}).") from None
    return meta


def _state_metadata(spec: str, state: Any) -> dict[str, Any]:
    """The ``certiqa`` metadata dict of a state-dict file (a fine-tuned student), else {}."""
    meta = state.get("certiqa") if isinstance(state, dict) else None
    if meta is not None and not isinstance(meta, dict):
        raise ModelSpecError(spec, f"the file's 'certiqa' metadata is a {type(meta).__name__}, expected a dict.")
    return meta or {}


def _cnniqa_from_state(spec: str, state: Any, path: Path) -> CNNIQA:
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        kernels, hidden = int(state["conv1.weight"].shape[0]), int(state["fc1.weight"].shape[0])
    except (KeyError, TypeError, AttributeError, IndexError):
        keys = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise ModelSpecError(
            spec, f"{str(path)!r} is not a CNNIQA state dict (no conv1.weight / fc1.weight tensors; found {keys})."
        ) from None
    model = CNNIQA(kernels, hidden)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    try:
        model.load_state_dict(check_state_dict(state, expected, str(path), "CNNIQA"))
    except ValueError as err:
        raise ModelSpecError(spec, str(err)) from None
    return model.eval()


def _read_state(spec: str, path: Path) -> Any:
    """:func:`certiqa.models.cnniqa.read_checkpoint`, its errors as :class:`ModelSpecError`."""
    if not path.is_file():
        raise ModelSpecError(spec, f"no such file {str(path)!r}.")
    try:
        return read_checkpoint(
            path, "the model", pickle_hint="save model.state_dict() and load it with a factory spec, or save a "
            "TorchScript archive (torch.jit.save) or exported program (torch.export.save)",
        )
    except ValueError as err:
        raise ModelSpecError(spec, str(err)) from None


def _load_torchscript(spec: str, path: Path) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    extra = {METADATA_FILE: ""}
    try:
        buffer = torchscript_buffer(path)
    except ValueError as err:
        raise ModelSpecError(spec, str(err)) from None
    try:
        module = torch.jit.load(buffer, map_location="cpu", _extra_files=extra)
    except Exception as err:  # a damaged archive fails inside torch in many ways; report it on one line
        raise ModelSpecError(
            spec, f"{str(path)!r} looks like a TorchScript archive but torch.jit.load failed "
            f"({type(err).__name__}: {_first_line(err)})."
        ) from None
    return module, _read_metadata(spec, extra[METADATA_FILE]), {}


def _load_exported(spec: str, path: Path) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    extra = {METADATA_FILE: ""}
    try:
        buffer = exported_program_buffer(path)
    except ValueError as err:
        raise ModelSpecError(spec, str(err)) from None
    try:
        program = torch.export.load(buffer, extra_files=extra)
    except Exception as err:  # a damaged archive fails inside torch in many ways; report it on one line
        raise ModelSpecError(
            spec, f"{str(path)!r} looks like an exported program but torch.export.load failed "
            f"({type(err).__name__}: {_first_line(err)})."
        ) from None
    inputs = program.graph_signature.user_inputs
    shapes = [n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder" and n.name in inputs]
    if len(shapes) != 1 or not isinstance(shapes[0], torch.Tensor) or shapes[0].ndim != 4:
        raise ModelSpecError(
            spec, f"the exported program {str(path)!r} takes {len(inputs)} input(s); expected one image batch "
            "of shape (B, 3, H, W)."
        )
    shape = shapes[0].shape
    fixed = {d: int(s) for d, s in enumerate(shape) if isinstance(s, int)}
    if 0 in fixed:
        raise ModelSpecError(
            spec, f"the exported program {str(path)!r} was exported for batches of exactly {fixed[0]} images; "
            "certiqa feeds batches of any size: export with a dynamic batch dimension (certiqa.models.save_exported)."
        )
    if fixed.get(1, 3) != 3:
        raise ModelSpecError(spec, f"the exported program {str(path)!r} takes {fixed[1]}-channel images; "
                                   "certiqa feeds RGB images (B, 3, H, W).")
    hints: dict[str, Any] = {"probe": (fixed.get(2), fixed.get(3))}  # None: any size
    lows = [int(program.range_constraints[s.node.expr].lower) for s in shape[2:]
            if isinstance(s, torch.SymInt) and s.node.expr in program.range_constraints]
    sides = [fixed[d] for d in (2, 3) if d in fixed] + lows
    if sides:
        hints["min_size"] = max(1, min(sides))
    return _ExportedModule(program, fixed, f"the exported program {str(path)!r}"), \
        _read_metadata(spec, extra[METADATA_FILE]), hints


def _load_file(spec: str, path: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    try:
        kind = archive_kind(path)
    except ValueError as err:
        raise ModelSpecError(spec, str(err)) from None
    if kind == "torchscript":
        return _load_torchscript(spec, path)
    if kind == "exported":
        return _load_exported(spec, path)
    if kind == "unknown":
        raise ModelSpecError(
            spec, f"{str(path)!r} is none of the model file formats (tried: TorchScript archive, exported "
            "program, torch.save state dict). Expected a file written by torch.jit.save, torch.export.save "
            "or torch.save(model.state_dict())."
        )
    state = _read_state(spec, path)
    if isinstance(state, dict) and state.get("format") == "certiqa-denoiser-v1":
        raise ModelSpecError(spec, f"{str(path)!r} is a certiqa denoiser file; pass it with --denoiser, not as the model.")
    keys = state.get("state_dict", state) if isinstance(state, dict) else None
    if isinstance(keys, dict) and {k.removeprefix("module.") for k in keys} == _CNNIQA_KEYS:
        return _cnniqa_from_state(spec, state, path), _state_metadata(spec, state), {}
    found = sorted(keys)[:6] if isinstance(keys, dict) else type(state).__name__
    raise ModelSpecError(
        spec, f"{str(path)!r} holds tensors that are not a CNNIQA state dict (found {found}); a state dict needs "
        "its architecture: load it with a factory spec, e.g. mymodule:build(weights='FILE'), or save the model "
        "as a TorchScript archive or exported program."
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


# ----------------------------------------------------------------------------- factories and pyiqa


def _load_factory(spec: str, module_name: str, attr: str, arg_text: str | None) -> Any:
    args, kwargs = _parse_arguments(spec, arg_text) if arg_text is not None else ([], {})
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # any error raised while importing the user's module
        raise ModelSpecError(
            spec, f"cannot import module {module_name!r} ({type(err).__name__}: {_first_line(err)}). Expected "
            "module.sub:factory with the module importable (installed, or its folder on PYTHONPATH)."
        ) from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelSpecError(spec, f"{module_name}:{attr} not found: {getattr(target, '__name__', target)!r} "
                                       f"has no attribute {part!r}.")
        target = getattr(target, part)
    if not callable(target):
        raise ModelSpecError(spec, f"{module_name}:{attr} is a {type(target).__name__}, not a callable factory.")
    try:
        model = target(*args, **kwargs)
    except Exception as err:  # the user's factory may raise anything; report it on one line
        raise ModelSpecError(
            spec, f"the factory {module_name}:{attr} raised {type(err).__name__}: {_first_line(err)}"
        ) from None
    if not callable(model):
        raise ModelSpecError(
            spec, f"the factory {module_name}:{attr} returned a {type(model).__name__}; expected an nn.Module or a "
            "callable mapping images (B, 3, H, W) in [0, 1] to scores (B,)."
        )
    return model


def _parse_range_text(value: Any) -> Any:
    """pyiqa states score ranges as text such as '~0, ~100' (approximate) or '0, ~' (open):
    text becomes a pair, or None when an end is open; other values pass through."""
    if not isinstance(value, str):
        return value
    try:
        return tuple(float(part.strip().lstrip("~").strip()) for part in value.split(","))
    except ValueError:
        return None


def _load_pyiqa(spec: str, text: str) -> nn.Module:
    """``pyiqa.create_metric`` for ``NAME`` or ``NAME(name=value, ...)`` (keyword literals only)."""
    match = _PYIQA.match(text.strip())
    if match is None or not match["name"].strip():
        raise ModelSpecError(spec, "expected pyiqa:NAME or pyiqa:NAME(name=value, ...), e.g. "
                                   "pyiqa:topiq_nr(pretrained=False, backbone_pretrain=False).")
    name = match["name"].strip()
    args, kwargs = _parse_arguments(spec, match["args"], "pyiqa") if match["args"] is not None else ([], {})
    if args:
        raise ModelSpecError(spec, f"pyiqa options are keyword arguments only (name=value), got the positional "
                                   f"value {args[0]!r}.")
    reserved = sorted(set(kwargs) & set(_PYIQA_RESERVED))
    if reserved:
        raise ModelSpecError(spec, f"{reserved[0]!r} is set by certiqa (as_loss=True, loss_reduction='none', on the "
                                   "CPU, then moved with --device); leave it out of the pyiqa options.")
    try:
        pyiqa = importlib.import_module("pyiqa")
    except ImportError as err:
        raise ModelSpecError(
            spec, f"pyiqa is not installed ({type(err).__name__}: {_first_line(err)}); install it with "
            "'pip install pyiqa' (it needs torchvision), or give another spec."
        ) from None
    options = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    try:
        metric = pyiqa.create_metric(name, as_loss=True, loss_reduction="none", device=torch.device("cpu"), **kwargs)
    except AssertionError as err:  # pyiqa asserts that the name is one of its metrics
        raise ModelSpecError(
            spec, f"pyiqa has no metric {name!r} ({_first_line(err) or 'AssertionError'}); "
            "'certiqa models' or pyiqa.list_models(metric_mode='NR') lists its no-reference metrics."
        ) from None
    except Exception as err:  # weights that cannot be downloaded, unknown options, missing extras, ...
        hint = (" To run without downloads give the weights, e.g. pyiqa:NAME(pretrained_model_path='FILE'), or an "
                "untrained architecture, e.g. pyiqa:NAME(pretrained=False).") if _is_download(err) else ""
        raise ModelSpecError(
            spec, f"pyiqa.create_metric({name!r}, as_loss=True{options}) raised {type(err).__name__}: "
            f"{_first_line(err)}{hint}"
        ) from None
    if getattr(metric, "metric_mode", "NR") != "NR":
        raise ModelSpecError(spec, f"pyiqa's {name!r} is a {metric.metric_mode} (full-reference) metric; "
                                   "certiqa certifies no-reference models.")
    return metric


def _is_download(err: BaseException) -> bool:
    """Whether ``err`` looks like a failed download (no network, or weights not cached)."""
    text = f"{type(err).__name__} {err}".lower()
    return any(word in text for word in ("url", "download", "connection", "resolve", "http", "offline", "hub"))


# ----------------------------------------------------------------------------- metadata


def _check_lower_better(spec: str, value: Any, source: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ModelSpecError(spec, f"lower_better from {source} must be True, False or None, got {value!r}.")


def _check_score_range(spec: str, value: Any, source: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError
    except (TypeError, ValueError):
        raise ModelSpecError(spec, f"score_range from {source} must be a pair (lo, hi) of finite numbers with "
                                   f"lo < hi, got {value!r}.") from None
    return lo, hi


def _check_min_size(spec: str, value: Any, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelSpecError(spec, f"min_size from {source} must be an integer >= 1, got {value!r}.")
    return value


def _resolve(spec: str, name: str, given: Any, meta: dict[str, Any], model: Any, hints: dict[str, Any]) -> Any:
    """The first known of: the argument, the archive's metadata, the model's attribute, the loader's hint."""
    check = {"lower_better": _check_lower_better, "score_range": _check_score_range, "min_size": _check_min_size}[name]
    if given is not None:
        return check(spec, given, "the arguments")
    if meta.get(name) is not None:
        return check(spec, meta[name], METADATA_FILE)
    attribute = getattr(model, name, None)
    if name == "score_range":
        attribute = _parse_range_text(attribute)
    if attribute is not None:
        return check(spec, attribute, "the model's attribute")
    return check(spec, hints.get(name), "the file")


def _probe(spec: str, model: LoadedModel, size: tuple[int, int]) -> bool:
    """Check the output shape on a batch of two random images; return whether a second call
    on the same batch gives different scores (a model with randomness of its own)."""
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            scores = model(x)
            again = model(x)
    except Exception as err:  # the model may fail in any way on the probe
        raise ModelSpecError(
            spec, f"the model failed on a probe batch of random images of shape {tuple(x.shape)} "
            f"({type(err).__name__}: {_first_line(err)}); if it needs larger images, state --min-size."
        ) from None
    try:
        check_scores(scores, 2, where="the model", finite=False)
    except (TypeError, ValueError) as err:
        raise ModelSpecError(spec, f"{str(err).rstrip('.')} on a probe batch of random images of shape "
                                   f"{tuple(x.shape)}.") from None
    return again.shape != scores.shape or not torch.equal(again, scores)


# ----------------------------------------------------------------------------- public


def load_model(
    spec: str,
    *,
    lower_better: bool | None = None,
    score_range: tuple[float, float] | None = None,
    min_size: int | None = None,
) -> LoadedModel:
    """The model named by ``spec`` (see :data:`MODEL_SPEC_HELP`) on the CPU, in eval mode,
    with its metadata; the keyword arguments override what the model states.

    Raises :class:`ModelSpecError` (a ValueError) with a one-line reason for a missing
    file, a file of none of the formats, a failed import, a factory that raises or
    returns a non-callable, unknown pyiqa metrics, and a model whose output on a probe
    batch of two random images is not of shape (2,) or (2, 1). The model is called twice
    on that batch; ``randomized`` says whether the two calls differed.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(str(spec), f"expected a non-empty string: {MODEL_SPEC_HELP}.")
    meta: dict[str, Any] = {}
    hints: dict[str, Any] = {}
    file: Path | None = None
    if spec == "default":
        model: Any = default_model()
        file = DEFAULT_WEIGHTS
    elif (path := _split_prefix(spec, "cnniqa:")) is not None:
        file = Path(path)
        state = _read_state(spec, file)
        model = _cnniqa_from_state(spec, state, file)  # LIVE DMOS: lower is better, 0-100
        meta = _state_metadata(spec, state)
    elif (text := _split_prefix(spec, "pyiqa:")) is not None:
        model = _load_pyiqa(spec, text)
    elif os.path.isfile(spec):
        file = Path(spec)
        model, meta, hints = _load_file(spec, file)
    elif (match := _FACTORY.match(spec)) is not None:
        model = _load_factory(spec, match["module"], match["attr"], match["args"])
    elif os.path.exists(spec):
        raise ModelSpecError(spec, f"{spec!r} is a folder, not a model file.")
    else:
        raise ModelSpecError(
            spec, f"no such file, and not of the form module.sub:factory. Expected {MODEL_SPEC_HELP}."
        )
    loaded = LoadedModel(
        model,
        spec=spec,
        file=file,
        lower_better=_resolve(spec, "lower_better", lower_better, meta, model, hints),
        score_range=_resolve(spec, "score_range", score_range, meta, model, hints),
        min_size=_resolve(spec, "min_size", min_size, meta, model, hints) or 1,
        provenance=meta.get("provenance"),
    )
    loaded.eval()
    side = max(PROBE_SIZE, loaded.min_size)
    loaded.randomized = _probe(spec, loaded, tuple(size or side for size in hints.get("probe", (None, None))))
    return loaded


@contextlib.contextmanager
def _size_oblivious() -> Any:
    """Let torch.export keep H and W symbolic through reshapes that could see a size of 1
    (otherwise it specialises CNNIQA to images of at least 65 pixels)."""
    from torch.fx.experimental import _config

    with _config.patch(backed_size_oblivious=True):
        yield


def _metadata_json(model: nn.Module) -> str:
    meta = {name: getattr(model, name, None) for name in ("lower_better", "score_range", "min_size")}
    if meta["score_range"] is not None:
        meta["score_range"] = [float(v) for v in meta["score_range"]]
    return json.dumps(meta)


def save_scripted(model: nn.Module, path: str | os.PathLike) -> Path:
    """``torch.jit.script(model)`` saved to ``path`` with the model's ``lower_better``,
    ``score_range`` and ``min_size`` in the archive's ``certiqa.json``; loads with
    ``load_model(path)`` on any image size the model's code handles."""
    path = Path(path)
    torch.jit.save(torch.jit.script(model.eval()), str(path), _extra_files={METADATA_FILE: _metadata_json(model)})
    return path


def save_exported(model: nn.Module, path: str | os.PathLike, example: torch.Tensor) -> Path:
    """``torch.export`` of ``model`` on ``example`` (B, 3, H, W) with dynamic batch, height
    and width (H, W >= the model's ``min_size``), saved to ``path`` with ``certiqa.json``
    metadata as :func:`save_scripted`. Raises torch's own error when the model's code
    fixes a dimension (then export it yourself with static shapes: certiqa runs it on
    images of that size only)."""
    path = Path(path)
    low = max(2, int(getattr(model, "min_size", 2) or 2))
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=low),
            3: torch.export.Dim("width", min=low)}
    with _size_oblivious():
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=(dims,))
    with open(path, "wb") as fh:  # a file object: torch.export.save wants a '.pt2' name otherwise
        torch.export.save(program, fh, extra_files={METADATA_FILE: _metadata_json(model)})
    return path
