"""Docs that cannot drift: every ```bash block in README.md and docs/**/*.md is checked.

Each block is preceded (blank lines aside) by one marker comment:

- ``<!-- run -->``: the block's commands are run as written, in a scratch folder that links to the
  repository's top-level entries (so ``examples/images`` and ``../shared/data`` resolve as in CI);
- ``<!-- run: OPTION VALUE ... -->``: the same, with each listed option's value replaced (or the
  option added) in every certiqa / script command of the block, e.g. ``<!-- run: --n 24 -->``;
- ``<!-- long-run -->``: not run; every command is parsed with the argparse parser of the program
  it calls (``certiqa.cli.build_parser()`` for ``certiqa``, the script's own parser for
  ``python path/to/script.py``), abbreviations off, so an option that no longer exists fails.

A block without a marker fails. ``pip``, ``python -m pytest`` and a few shell tools are accepted
as they are (installation and the test suite itself are what CI runs); any other program fails,
so that a new kind of command gets a rule here rather than going unchecked.

The README's expected output (the text block after ``<!-- output -->``) is compared, line by
line, with the output of a real run of the command block before it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO

MARKER = re.compile(r"^<!--\s*(run|long-run)(?::\s*(.*?))?\s*-->$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
# Programs accepted without a check: installation, the test suite, the docs build and shell tools.
ACCEPTED = {"pip", "pip3", "pytest", "mkdocs", "git", "cd", "mkdir", "cp", "ls", "cat", "echo", "export",
            "rm", "mv", "tail", "head", "nvidia-smi", ".ci/run"}
WRAPPERS = {"nohup", "time"}


@dataclass
class Block:
    path: Path
    line: int                 # 1-based line of the opening fence
    code: str
    mode: str | None          # "run", "long-run" or None (unmarked)
    overrides: list[str] = field(default_factory=list)
    output: str | None = None  # the expected-output block after <!-- output -->, if any

    def where(self) -> str:
        return f"{self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path}:{self.line}"


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def extract_blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every ```bash block of a Markdown file, with the marker comment before it."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    i = 0
    last_marker: tuple[str, str | None] | None = None
    pending_output = False
    while i < len(lines):
        stripped = lines[i].strip()
        fence = FENCE.match(lines[i])
        if fence:
            language, start = fence.group(2), i
            j = i + 1
            while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            body = "\n".join(line[len(fence.group(1)):] for line in lines[i + 1:j])
            if language in ("bash", "sh", "shell", "console"):
                mode, options = last_marker if last_marker else (None, None)
                blocks.append(Block(path, start + 1, body, mode, shlex.split(options or "")))
            elif pending_output and blocks:
                blocks[-1].output = body
            last_marker, pending_output = None, False
            i = j + 1
            continue
        match = MARKER.match(stripped)
        if match:
            last_marker = (match.group(1), match.group(2))
        elif stripped == "<!-- output -->":
            pending_output = True
        elif stripped:
            last_marker = None
            pending_output = pending_output and stripped.startswith("<!--")
        i += 1
    return blocks


# --- shell splitting ---------------------------------------------------------------------------

def split_commands(code: str) -> list[list[str]]:
    """Commands of a block as argv lists: continuation lines joined, comments dropped, split at
    newlines, &&, || and ;, redirections removed, simple NAME=value assignments expanded."""
    text = re.sub(r"\\\n", " ", code)
    variables: dict[str, str] = {}
    commands: list[list[str]] = []
    start = 0
    for raw in text.splitlines():
        raw = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: variables.get(m.group(1), m.group(0)), raw)
        lexer = shlex.shlex(raw, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        tokens = list(lexer)
        skip_next = False
        for token in tokens:
            if skip_next:
                skip_next = False
                continue
            if token in (";", "&&", "||", "|", "&"):
                commands.append(current)
                current = []
            elif token in (">", ">>", "<", "2>", "&>") or (token and set(token) <= set("<>&")):
                skip_next = True
            elif re.fullmatch(r"\d?>+", token):
                skip_next = True
            else:
                current.append(token)
        commands.append(current)
        for argv in commands[start:]:
            while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
                name, value = argv[0].split("=", 1)
                variables[name] = value
                del argv[0]
        start = len(commands)
    return [argv for argv in commands if argv]




# --- which program a command calls ---------------------------------------------------------------

@dataclass
class Call:
    kind: str                 # "certiqa", "script", "python-c", "accepted"
    argv: list[str]           # the program's own arguments
    script: Path | None = None


def classify(argv: list[str]) -> Call:
    """What a command runs; raises ValueError for an unknown program."""
    argv = list(argv)
    while argv and (argv[0] in WRAPPERS or argv[0] == "nice"):
        argv = argv[3:] if argv[0] == "nice" and len(argv) > 2 and argv[1] == "-n" else argv[1:]
    if not argv:
        raise ValueError("empty command")
    program = argv[0]
    if program == "certiqa":
        return Call("certiqa", argv[1:])
    if program in ("python", "python3", "torchrun"):
        rest = argv[1:]
        if program == "torchrun":  # skip torchrun's own options up to -m MODULE or a script
            k = 0
            while k < len(rest) and rest[k] != "-m" and not rest[k].endswith(".py"):
                k += 1
            rest = rest[k:]
        while rest and rest[0] in ("-u", "-O", "-B"):
            rest = rest[1:]
        if not rest:
            raise ValueError(f"{program} without a module or script")
        if rest[0] == "-m":
            module = rest[1] if len(rest) > 1 else ""
            if module == "certiqa":
                return Call("certiqa", rest[2:])
            if module in ("pip", "pytest"):
                return Call("accepted", rest)
            raise ValueError(f"python -m {module}: no rule for this module in tests/test_docs.py")
        if rest[0] == "-c":
            return Call("python-c", rest[1:])
        script = REPO / rest[0]
        if not script.is_file():
            raise ValueError(f"script {rest[0]} does not exist")
        return Call("script", rest[1:], script)
    if program in ACCEPTED:
        return Call("accepted", argv[1:])
    raise ValueError(f"program {program!r} has no rule in tests/test_docs.py (ACCEPTED lists the ones taken as they are)")


# --- parsers ----------------------------------------------------------------------------------------

class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


def script_parser(script: Path) -> argparse.ArgumentParser:
    """The argparse parser of a script, without running it: its ``build_parser()`` when it has one,
    else the parser its ``main`` builds, caught at ``parse_args`` before any work."""
    name = "_docs_" + re.sub(r"\W", "_", str(script.relative_to(REPO)))
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    if hasattr(module, "build_parser"):
        return module.build_parser()

    def capture(self, args=None, namespace=None):  # noqa: ARG001
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        main = module.main
        main([]) if inspect.signature(main).parameters else main()
    except _Captured as got:
        return got.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{script}: main() returned without calling parse_args")


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)


def parse_error(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """None when argv parses (or asks for --help), else argparse's message."""
    _no_abbreviations(parser)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as stop:
        if stop.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {stop.code}"
    return None


def check_command(argv: list[str]) -> str | None:
    """None when a documented command is valid for the program it calls, else why not."""
    try:
        call = classify(argv)
    except ValueError as err:
        return str(err)
    args = call.argv
    if call.kind == "certiqa":
        from certiqa.cli import build_parser
        return parse_error(build_parser(), args)
    if call.kind == "script":
        return parse_error(script_parser(call.script), args)
    if call.kind == "python-c":
        try:
            compile(args[0] if args else "", "<python -c>", "exec")
        except SyntaxError as err:
            return f"python -c: {err}"
    return None


def check_block(block: Block) -> list[str]:
    """Problems of one block: unmarked, or a command that does not parse."""
    if block.mode is None:
        return [f"{block.where()}: bash block without <!-- run --> / <!-- run: ... --> / <!-- long-run --> marker"]
    problems = []
    for argv in split_commands(block.code):
        problem = check_command(argv)
        if problem:
            problems.append(f"{block.where()}: `{shlex.join(argv)}`: {problem}")
    return problems


# --- running ----------------------------------------------------------------------------------------

def with_overrides(parser: argparse.ArgumentParser, args: list[str], overrides: list[str]) -> list[str]:
    """args with each OPTION VALUE of overrides replacing that option's value (any spelling of it)."""
    spellings = {s: action for action in parser._actions for s in action.option_strings}
    out = list(args)
    k = 0
    while k < len(overrides):
        option, value = overrides[k], overrides[k + 1]
        k += 2
        action = spellings[option]
        for i, token in enumerate(out):
            if token in action.option_strings:
                out[i + 1] = value
                break
        else:
            out += [option, value]
    return out


def run_block(block: Block, workdir: Path) -> str:
    """Runs the block's certiqa and script commands (pip and pytest are skipped); returns their
    combined stdout and stderr."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    output = []
    for argv in split_commands(block.code):
        call = classify(argv)
        if call.kind == "accepted":
            continue
        args = call.argv
        if call.kind == "certiqa":
            from certiqa.cli import build_parser
            parser = build_parser()
            command = [sys.executable, "-m", "certiqa"]
            sub = parser._subparsers._group_actions[0].choices[args[0]]
            args = [args[0], *with_overrides(sub, args[1:], block.overrides)]
        elif call.kind == "script":
            command = [sys.executable, str(call.script.relative_to(REPO))]
            args = with_overrides(script_parser(call.script), args, block.overrides)
        else:
            command = [sys.executable, "-c"]
        done = subprocess.run(command + args, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{block.where()}: `{shlex.join(argv)}` exited {done.returncode}:\n{done.stderr[-3000:]}"
        output.append(done.stdout + done.stderr)
    return "".join(output)


def missing_output_lines(expected: str, output: str) -> list[str]:
    """The lines of a documented output that a real run did not print (progress-bar redraws,
    separated by carriage returns, count as lines; trailing spaces are ignored)."""
    got = {line.rstrip() for line in re.split(r"[\r\n]", output) if line.strip()}
    return [line for line in expected.splitlines() if line.strip() and line.rstrip() not in got]


def scratch_repo(tmp_path: Path) -> Path:
    """A folder whose entries link to the repository's, beside a link to the shared data."""
    work = tmp_path / "repo"
    work.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in (".git", "runs"):
            (work / entry.name).symlink_to(entry)
    if (REPO.parent / "shared").exists():
        (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    return work


ALL_BLOCKS = [block for path in doc_files() for block in extract_blocks(path)]


# --- tests ------------------------------------------------------------------------------------------

def test_the_docs_have_bash_blocks():
    assert any(block.path.name == "README.md" for block in ALL_BLOCKS)
    assert any(block.mode == "run" for block in ALL_BLOCKS)


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.mode != "run"], ids=lambda b: b.where())
def test_long_run_blocks_parse(block: Block):
    assert check_block(block) == []


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.mode == "run"], ids=lambda b: b.where())
def test_run_blocks_run(block: Block, tmp_path: Path):
    assert check_block(block) == []
    output = run_block(block, scratch_repo(tmp_path))
    if block.output is not None and not block.overrides:
        missing = missing_output_lines(block.output, output)
        assert not missing, (f"{block.where()}: the documented output differs from a real run; "
                             f"lines not printed: {missing}\nthe run printed:\n{output}")


def test_readme_test_command_is_what_ci_runs():
    """The README's test command ends with the first pytest command that .ci/run runs (the suite;
    a later one runs the real-pyiqa tests in a venv of their own)."""
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    ci_pytest = [line for line in ci if "pytest" in line and not line.startswith("#") and "install" not in line]
    readme = [argv for b in ALL_BLOCKS if b.path.name == "README.md" for argv in split_commands(b.code)]
    documented = [shlex.join(argv) for argv in readme if "pytest" in argv and "-m" in argv and "pip" not in argv]
    assert ci_pytest and documented, (ci_pytest, documented)
    assert ci_pytest[0].replace("python3 ", "python ") in documented, (ci_pytest, documented)


def test_every_block_is_marked():
    unmarked = [b.where() for b in ALL_BLOCKS if b.mode is None]
    assert not unmarked, f"bash blocks without a marker: {unmarked}"


# The checker itself: it must fail on what drifted.

def test_checker_rejects_a_renamed_option():
    block = Block(REPO / "x.md", 1, "certiqa certify examples/images --eps 0.05 --samples 200", "long-run")
    problems = check_block(block)
    assert len(problems) == 1 and "unrecognized arguments: --samples 200" in problems[0], problems


def test_checker_rejects_an_abbreviation_of_a_longer_option():
    """`--futility-err` would parse as an abbreviation of --futility-error; the checker refuses it,
    so renaming --futility-err to --futility-error-rate cannot slip through."""
    problems = check_block(Block(REPO / "x.md", 1, "certiqa certify a.png --delta 1 --futility power "
                                                   "--futility-err 0.1", "long-run"))
    assert len(problems) == 1 and "--futility-err" in problems[0], problems


def test_checker_rejects_renamed_script_options_and_missing_scripts():
    sweep = "python certify/sweep_sigma.py examples/images --sigma 0.12 --n 8"
    assert check_block(Block(REPO / "x.md", 1, sweep, "long-run")) == []
    renamed = sweep.replace("--n 8", "--samples 8")
    assert "unrecognized arguments: --samples 8" in check_block(Block(REPO / "x.md", 1, renamed, "long-run"))[0]
    no_build_parser = "python certify/certify_set.py ROOT --eps 0.05 --no-such-option"
    assert "unrecognized arguments: --no-such-option" in check_block(Block(REPO / "x.md", 1, no_build_parser,
                                                                           "long-run"))[0]
    missing = check_block(Block(REPO / "x.md", 1, "python certify/gone.py --n 3", "long-run"))
    assert missing and "does not exist" in missing[0]


def test_checker_rejects_unmarked_blocks_and_unknown_programs(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```bash\ncertiqa certify a.png\n```\n\n<!-- long-run -->\n```bash\nfrobnicate --x\n```\n")
    unmarked, unknown = extract_blocks(page)
    assert unmarked.mode is None and "without" in check_block(unmarked)[0]
    assert unknown.mode == "long-run" and "'frobnicate' has no rule" in check_block(unknown)[0]


def test_split_commands_handles_the_shell_forms_the_docs_use():
    code = ("# a comment\nL=\"--n 16 --seed 0\"\npip install -e '.[test]' && python -m pytest -q\n"
            "certiqa certify a.png \\\n    --eps 0.05 > out.txt  # trailing comment\n"
            "nice -n 10 python certify/x.py $L; torchrun --nproc-per-node 2 -m certiqa certify d -n 5\n")
    assert split_commands(code) == [
        ["pip", "install", "-e", ".[test]"], ["python", "-m", "pytest", "-q"],
        ["certiqa", "certify", "a.png", "--eps", "0.05"],
        ["nice", "-n", "10", "python", "certify/x.py", "--n", "16", "--seed", "0"],
        ["torchrun", "--nproc-per-node", "2", "-m", "certiqa", "certify", "d", "-n", "5"]]


def test_output_check_reports_changed_lines():
    expected = "a  1.00\nwrote 2 row(s)\n"
    assert missing_output_lines(expected, "progress\ra  1.00\nwrote 2 row(s)\n") == []
    assert missing_output_lines(expected, "a  1.01\nwrote 2 row(s)\n") == ["a  1.00"]


def test_overrides_replace_any_spelling():
    from certiqa.cli import build_parser
    sub = build_parser()._subparsers._group_actions[0].choices["certify"]
    assert with_overrides(sub, ["x", "-n", "200", "--seed", "0"], ["--n", "24"]) == ["x", "-n", "24", "--seed", "0"]
    assert with_overrides(sub, ["x"], ["--n", "24"]) == ["x", "--n", "24"]


def test_api_reference_modules_import():
    """Every module the API reference renders (``::: name`` in docs/api) imports cleanly."""
    import importlib
    names = [line.split(":::", 1)[1].strip() for page in sorted((REPO / "docs" / "api").glob("*.md"))
             for line in page.read_text(encoding="utf-8").splitlines() if line.startswith(":::")]
    assert "certiqa.bounds" in names
    for name in names:
        importlib.import_module(name)


def test_readme_links_point_to_existing_files():
    """The README is not part of the site build, so its relative links are checked here."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", text) if "://" not in t]
    assert targets
    missing = [t for t in targets if t and not (REPO / t).exists()]
    assert not missing, missing


def test_every_certify_option_is_documented():
    """docs/cli.md names every option of `certiqa certify`, so a new option cannot stay undocumented."""
    from certiqa.cli import build_parser
    sub = build_parser()._subparsers._group_actions[0].choices["certify"]
    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [action.option_strings[-1] for action in sub._actions
               if action.option_strings and action.option_strings[-1] != "--help"
               and not re.search(re.escape(action.option_strings[-1]) + r"(?![\w-])", page)]
    assert not missing, f"options of certiqa certify missing from docs/cli.md: {missing}"


@pytest.mark.slow
def test_readme_python_quick_start_runs(capsys):
    """The README's Python block runs as written, at n 64 instead of 1000."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"## Python quick start\n\n```python\n(.*?)```", text, flags=re.S)
    assert "n=1000" in code
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        exec(compile(code.replace("n=1000", "n=64"), "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines
    assert lines[0].endswith("tensor([True])"), lines[0]                 # eps 0.05 is certified at n 64
    assert "'certified': True" in lines[1] and "'n': 64" in lines[1], lines[1]
    assert re.fullmatch(r"tensor\(\[0\.\d+\], dtype=torch\.float64\)", lines[2]), lines[2]  # a radius in (0, 1)
    assert re.match(r"\('(certified|not certifiable|futile|undecided)',\) tensor\(\[\d+\]\)", lines[3]), lines[3]


SCRIPTS = sorted(p for folder in ("certify", "denoisers", "examples", "benchmarks")
                 for p in (REPO / folder).glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_script_parser_is_reachable(script: Path):
    """Each script's parser can be had without running the script, so documented commands of
    every script can be checked."""
    parser = script_parser(script)
    assert isinstance(parser, argparse.ArgumentParser)
    assert parse_error(parser, ["--no-such-option-anywhere"]) is not None
