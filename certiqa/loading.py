"""Reading model, denoiser and weights files without running code from them.

Every file certiqa loads goes through one of three readers here:

- :func:`read_checkpoint`: a ``torch.save`` file (state dict, denoiser record,
  training checkpoint), read from memory with ``torch.load(weights_only=True)``:
  tensors and plain containers only, never a Python object.
- :func:`exported_program_buffer`: a ``torch.export.save`` archive, checked member by
  member and rebuilt in memory before ``torch.export.load`` sees it: no pickle is
  left in it (torch would otherwise fall back to ``torch.load(weights_only=False)``),
  every operator is a registered torch operator, every shape expression a plain
  sympy expression, and no guard code.
- :func:`torchscript_buffer`: a ``torch.jit.save`` archive, its members and the
  classes its pickles name checked before ``torch.jit.load`` (whose C++ unpickler
  resolves TorchScript types only) reads it from memory.

Each refusal is a ValueError with a one-line message naming the file, what was
found and what the file should be; torch's own advice to retry with
``weights_only=False`` is never passed on. What this does not guarantee (the model's
computation runs torch operators, which certiqa does not sandbox) is stated in
``docs/security.md``.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import pickletools
import re
import zipfile
from typing import Any, Callable

import torch

__all__ = ["read_checkpoint", "exported_program_buffer", "torchscript_buffer", "archive_kind"]

STATE_DICT_EXPECTED = "a state dict written by torch.save(model.state_dict())"


def _read_bytes(path: str, what: str) -> bytes:
    """The file's bytes; a one-line error for a missing or unreadable file."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path!r}.") from None
    except OSError as err:
        raise ValueError(_cannot_read(path, what, err)) from None


def _cannot_read(path: str, what: str, err: OSError) -> str:
    if isinstance(err, IsADirectoryError):
        return f"{what} file {path!r} is a folder, not a file."
    reason = "permission denied" if isinstance(err, PermissionError) else (err.strerror or type(err).__name__).lower()
    return f"{what} file {path!r} cannot be read: {reason}; check that this user may read it."


def _members(data: bytes) -> list[str] | None:
    """The member names of a zip archive held in ``data`` (None when it is not one)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def archive_kind(path: str | os.PathLike) -> str:
    """'torchscript', 'exported', 'torch.save' or 'unknown', from the archive's members
    (or, for a file that is not a zip archive, from a legacy pickle's first byte); a
    ValueError for a file that cannot be read."""
    try:
        with open(path, "rb") as fh:  # the names only: the loaders read and check the contents
            names = zipfile.ZipFile(fh).namelist() if zipfile.is_zipfile(fh) else None
            fh.seek(0)
            head = fh.read(1)
    except (zipfile.BadZipFile, ValueError):
        return "unknown"
    except OSError as err:
        raise ValueError(_cannot_read(os.fspath(path), "the model", err)) from None
    if names is None:
        return "torch.save" if head == b"\x80" else "unknown"  # a legacy (pre-zip) torch.save pickle
    relative = {name.split("/", 1)[-1] for name in names}
    if "archive_format" in relative or "serialized_exported_program.json" in relative:
        return "exported"
    if "constants.pkl" in relative and any(n.startswith("code/") for n in relative):
        return "torchscript"
    if "data.pkl" in relative:
        return "torch.save"
    return "unknown"


# ----------------------------------------------------------------------------- torch.save files


def read_checkpoint(path: str | os.PathLike, what: str, *, expected: str = STATE_DICT_EXPECTED,
                    pickle_hint: str = "save model.state_dict()") -> Any:
    """``torch.load(weights_only=True)`` of the file's bytes onto the CPU: tensors and plain
    containers only.

    Raises FileNotFoundError for a missing file and ValueError for anything that cannot be
    read that way: a file that is no PyTorch file, or one holding pickled Python objects
    (its message ends with ``pickle_hint``). ``expected`` says what the file should be."""
    path = os.fspath(path)
    data = _read_bytes(path, what)
    kind = "zip" if _members(data) is not None else "pickle" if data[:1] == b"\x80" else None
    if kind is None:
        raise ValueError(f"{path!r} is not a PyTorch file (neither a zip archive nor a pickle), so it cannot be read "
                         f"as {what}; expected {expected}.")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            raise ValueError(
                f"{path!r} is a pickle of Python objects ({found[1]}), not only tensors (a whole "
                f"pickled model?); certiqa never unpickles objects (torch.load(weights_only=True)): {pickle_hint}."
            ) from None
        raise ValueError(_unreadable(path, what, expected)) from None
    except Exception:  # torch.load of a damaged or foreign file raises many kinds (a text file: KeyError)
        raise ValueError(_unreadable(path, what, expected)) from None


def _unreadable(path: str, what: str, expected: str) -> str:
    return (f"{path!r} is not a loadable PyTorch file for {what} (damaged, truncated, or another format); "
            f"expected {expected}.")


# ----------------------------------------------------------------------------- archives


def _split_root(path: str, names: list[str], what: str) -> str:
    """The single top folder every member of a torch archive lives in (each member named once:
    with two members of one name, torch and zipfile could each read another)."""
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})[:3]
        raise ValueError(f"{path!r}: the {what} archive holds members of the same name twice ({twice}); it was not "
                         "written by torch.")
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise ValueError(f"{path!r}: the {what} archive's members are not all in one top folder "
                         f"(found {sorted(roots)[:4]}); it was not written by torch.")
    return roots.pop() + "/"


def _refuse_member(path: str, member: str, what: str, why: str) -> ValueError:
    return ValueError(f"{path!r}: the {what} holds {member!r} ({why}), which certiqa does not load because it "
                      "could run code; export the model again with plain tensors only.")


# exported programs: the members torch.export.save writes for one model named 'model'
_PT2_FIXED = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
              "models/model.json", "data/weights/model_weights_config.json",
              "data/constants/model_constants_config.json", "data/sample_inputs/model.pt"}
_PT2_SAMPLE_INPUTS = "data/sample_inputs/model.pt"
_OPERATOR_NAMES = {"getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pos", "pow", "abs", "eq",
                   "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift"}
_SYM_FUNCTIONS = {"sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sum", "_sym_sqrt"}
_IDENT = re.compile(r"^[A-Za-z_]\w*$")


def _check_target(path: str, target: Any) -> None:
    """A graph target must be a registered torch operator, a plain operator-module
    function, a math function or a torch symbolic-size helper: torch's deserializer
    would otherwise resolve any ``torch.a.b.c`` attribute chain (``torch.serialization.os.system``)."""
    parts = target.split(".") if isinstance(target, str) else []
    ok = False
    if parts and all(_IDENT.match(p) and not p.startswith("__") for p in parts):
        if len(parts) == 5 and parts[:2] == ["torch", "ops"]:
            try:
                found = getattr(getattr(getattr(torch.ops, parts[2]), parts[3]), parts[4])
            except (AttributeError, RuntimeError):
                found = None
            ok = isinstance(found, torch._ops.OpOverload)
        elif len(parts) == 2:
            ok = ((parts[0] == "_operator" and parts[1] in _OPERATOR_NAMES)
                  or (parts[0] == "math" and not parts[1].startswith("_"))
                  or (parts[0] == "torch" and parts[1] in _SYM_FUNCTIONS))
    if not ok:
        raise ValueError(f"{path!r}: the exported program calls {target!r}, which is not a registered torch operator; "
                         "certiqa loads exported programs made of torch operators only (torch.export of an nn.Module).")


_SYMPY_NAMES = {"Symbol", "Dummy", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Mod", "floor",
                "ceiling", "Abs", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan",
                "StrictGreaterThan", "LessThan", "GreaterThan", "And", "Or", "Not", "Xor", "Piecewise",
                "ExprCondPair", "true", "false", "oo", "zoo", "nan", "int_oo", "Half", "One", "Zero", "NegativeOne",
                "Infinity", "NegativeInfinity", "IntInfinity", "NegativeIntInfinity", "BooleanTrue", "BooleanFalse"}


def _expression_names() -> set[str]:
    """The sympy constructors a shape expression may call: sympy's arithmetic, comparison and
    logic classes above and torch's own size functions (torch.utils._sympy.functions)."""
    import sympy
    from torch.utils._sympy import functions

    return _SYMPY_NAMES | {n for n in dir(functions) if isinstance(getattr(functions, n), type)
                           and issubclass(getattr(functions, n), sympy.Basic)}


def _check_expression(path: str, text: Any, allowed: set[str]) -> None:
    """A shape expression must be a sympy expression tree written with constructor calls
    (``Add(Symbol('s0', integer=True), Integer(1))``): torch parses it with
    ``sympy.sympify``, which evaluates Python."""
    def plain(node: ast.AST) -> bool:
        if isinstance(node, ast.Expression):
            return plain(node.body)
        if isinstance(node, ast.Constant):  # strings: symbol names only (some constructors sympify a string)
            value = node.value
            return isinstance(value, (int, float, bool)) or value is None or bool(isinstance(value, str)
                                                                                   and _IDENT.match(value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float))
        if isinstance(node, ast.Name):
            return node.id in allowed
        if isinstance(node, ast.Call):
            return (isinstance(node.func, ast.Name) and node.func.id in allowed and all(plain(a) for a in node.args)
                    and all(k.arg is not None and plain(k.value) for k in node.keywords))
        return False

    _refuse_unless(path, text, plain, "shape expression", "is not a plain sympy expression; certiqa does not evaluate "
                   "it (sympy.sympify runs Python)")


def _refuse_unless(path: str, text: Any, plain: Callable[[ast.AST], bool], what: str, why: str) -> None:
    """Raise a one-line ValueError naming ``what`` unless ``text`` parses as a Python expression
    that ``plain`` accepts; nothing is evaluated."""
    try:
        ok = isinstance(text, str) and plain(ast.parse(text, mode="eval"))
    except SyntaxError:
        ok = False
    if not ok:
        shown = text if len(str(text)) <= 80 else f"{str(text)[:77]}..."
        raise ValueError(f"{path!r}: the exported program holds the {what} {shown!r}, which {why}.")


_GUARD_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
              ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_TENSOR_METHODS = {"size", "stride", "storage_offset", "dim"}
_GUARD_FUNCTIONS = {"max", "min", "abs"}


def _plain_guard(node: ast.AST) -> bool:
    """Whether ``node`` is arithmetic and comparisons on input sizes (``L['x'].size()[2] >= 2``)."""
    if isinstance(node, ast.Expression):
        return _plain_guard(node.body)
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, bool))
    if isinstance(node, (ast.operator, ast.unaryop, ast.boolop, ast.cmpop)):
        return isinstance(node, _GUARD_OPS)
    if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare)):
        return all(_plain_guard(child) for child in ast.iter_child_nodes(node))
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        key = node.slice.value
        if isinstance(node.value, ast.Name) and node.value.id == "L":  # the input named key
            return isinstance(key, str) and bool(_IDENT.match(key))
        return type(key) is int and _plain_guard(node.value)
    if isinstance(node, ast.Call) and not node.keywords:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _TENSOR_METHODS:  # L['x'].size()
            return _plain_guard(func.value) and all(isinstance(a, ast.Constant) and type(a.value) is int
                                                     for a in node.args)
        named = (isinstance(func, ast.Name) and func.id in _GUARD_FUNCTIONS) or (
            isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math"
            and not func.attr.startswith("_"))
        return named and all(_plain_guard(a) for a in node.args)
    return False


def _check_guard(path: str, text: Any) -> None:
    """Guard code is Python source that torch compiles into the loaded module: it must be
    arithmetic and comparisons on the input's sizes only."""
    _refuse_unless(path, text, _plain_guard, "input guard", "is not arithmetic on input sizes; certiqa does not run "
                   "it (torch compiles guards as Python)")


def _walk(value: Any) -> Any:
    """(key, value) for every dict entry in a JSON tree."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _json(path: str, archive: zipfile.ZipFile, member: str) -> Any:
    try:
        return json.loads(archive.read(member))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path!r}: the exported program's {member!r} is not valid JSON ({type(err).__name__}); "
                         "the file is damaged.") from None


def _payload_files(path: str, config: Any, member: str, prefix: str) -> set[str]:
    """The files a weights/constants config names; each must be a raw tensor (no pickle)."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ValueError(f"{path!r}: the exported program's {member!r} has no 'config' object; the file is damaged.")
    files = set()
    for name, entry in entries.items():
        file = entry.get("path_name") if isinstance(entry, dict) else None
        if not isinstance(file, str) or not re.fullmatch(rf"{prefix}\d+", file):
            raise _refuse_member(path, f"{member}: {name}", "exported program",
                                 f"a {str(file)!r} entry, not a raw tensor file {prefix}N")
        if entry.get("use_pickle"):
            raise _refuse_member(path, f"{member}: {name}", "exported program", "a pickled tensor")
        files.add(file)
    return files


def exported_program_buffer(path: str | os.PathLike) -> io.BytesIO:
    """The ``torch.export.save`` archive at ``path``, checked and rebuilt in memory for
    ``torch.export.load``: its pickled sample inputs are dropped (certiqa does not use them;
    torch would unpickle them with a ``weights_only=False`` fallback), and any other pickle,
    custom object, compiled (AOTInductor) part, guard code, non-operator call target or
    non-sympy shape expression is refused with a ValueError."""
    path = os.fspath(path)
    what = "exported program"
    data = _read_bytes(path, "the model")
    names = _members(data)
    if names is None:
        raise ValueError(f"{path!r} is not a zip archive, so not an exported program (torch.export.save).")
    root = _split_root(path, names, what)
    relative = [name[len(root):] for name in names]
    if "archive_format" not in relative:
        raise ValueError(f"{path!r} is an exported program of an older torch format (pickled state dicts inside); "
                         "certiqa reads only the current pt2 archive format: export the model again.")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        weights = _payload_files(path, _json(path, archive, root + "data/weights/model_weights_config.json"),
                                 "data/weights/model_weights_config.json", "weight_") \
            if "data/weights/model_weights_config.json" in relative else set()
        constants = _payload_files(path, _json(path, archive, root + "data/constants/model_constants_config.json"),
                                   "data/constants/model_constants_config.json", "tensor_") \
            if "data/constants/model_constants_config.json" in relative else set()
        allowed = _PT2_FIXED | {f"data/weights/{f}" for f in weights} | {f"data/constants/{f}" for f in constants}
        for name in relative:
            if name not in allowed and not re.fullmatch(r"extra/[^/]+", name):
                why = ("a pickled object" if name.endswith((".pt", ".pkl")) or "custom_obj_" in name
                       or "opaque_obj_" in name else "a member torch.export.save does not write for a plain model")
                raise _refuse_member(path, name, what, why)
        if "models/model.json" not in relative:
            raise ValueError(f"{path!r}: the exported program has no models/model.json; the file is damaged.")
        program = _json(path, archive, root + "models/model.json")
        if not isinstance(program, dict):
            raise ValueError(f"{path!r}: the exported program's models/model.json is not a JSON object; damaged.")
        guards = program.get("guards_code") or []
        for guard in guards if isinstance(guards, list) else [guards]:
            _check_guard(path, guard)
        sympy_names = _expression_names()
        for key, value in _walk(program):
            if key in ("target", "as_operator"):
                _check_target(path, value)
            elif key == "expr_str":
                _check_expression(path, value, sympy_names)
        return _rebuilt(archive, {root + _PT2_SAMPLE_INPUTS: b""})


def _rebuilt(archive: zipfile.ZipFile, replace: dict[str, bytes]) -> io.BytesIO:
    """A new in-memory zip of exactly the members read and checked here (``replace`` swapping
    some contents), so that torch reads those bytes and no other part of the original file."""
    rebuilt = io.BytesIO()
    with zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_STORED) as out:
        for info in archive.infolist():
            out.writestr(info.filename, replace.get(info.filename, archive.read(info)))
    rebuilt.seek(0)
    return rebuilt


# TorchScript: what torch.jit.save writes, and the classes its pickles may name
_TS_MEMBER = re.compile(r"^(data\.pkl|constants\.pkl|version|byteorder|\.data/version|\.data/serialization_id|"
                        r"data/\d+|constants/\d+|extra/[^/]+|code/.+\.py|code/.+\.py\.debug_pkl)$")
_TS_GLOBAL = re.compile(r"^(__torch__(\.[\w.]+)? \w+|torch \w+Storage|torch\._utils _rebuild_\w+|"
                        r"torch\.jit\._pickle \w+|collections OrderedDict|torch (device|Size|dtype|layout))$")


def torchscript_buffer(path: str | os.PathLike) -> io.BytesIO:
    """The ``torch.jit.save`` archive at ``path`` rebuilt in memory for ``torch.jit.load``,
    after checking that it holds only the members torch.jit.save writes and that its pickles
    (``data.pkl``, ``constants.pkl``, the ``code/*.debug_pkl`` source maps; read by TorchScript's
    C++ unpickler, which resolves TorchScript types only) name no class outside TorchScript's
    own (``__torch__.*``, tensor rebuilds, storages)."""
    path = os.fspath(path)
    what = "TorchScript archive"
    data = _read_bytes(path, "the model")
    names = _members(data)
    if names is None:
        raise ValueError(f"{path!r} is not a zip archive, so not a TorchScript archive (torch.jit.save).")
    root = _split_root(path, names, what)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in names:
            member = name[len(root):]
            if not _TS_MEMBER.match(member):
                raise _refuse_member(path, member, what, "a member torch.jit.save does not write")
            if member.endswith(("pkl", "debug_pkl")):
                try:
                    ops = list(pickletools.genops(archive.read(name)))
                except Exception:  # a damaged pickle: torch.jit.load would fail on it as well
                    raise ValueError(f"{path!r}: the TorchScript archive's {member!r} is not a valid pickle; "
                                     "the file is damaged.") from None
                for op, arg, _ in ops:
                    if op.name in ("STACK_GLOBAL", "INST", "OBJ") or (op.name == "GLOBAL" and not _TS_GLOBAL.match(arg)):
                        raise _refuse_member(path, member, what, f"a pickle naming {arg or op.name!r}, not a "
                                                                 "TorchScript type")
        return _rebuilt(archive, {})
