"""The documentation is checked like code: every command it shows, every link, every path and module it names.

Commands are read from the fenced shell blocks of README.md and docs/*.md (and from inline code that
starts with ``nasrun`` or ``python scripts/``). ``nasrun search|retrain|pipeline`` lines are composed
and given the checks the command line makes before it runs a job, without running it: an unknown
key, option or value fails here as it would for a user. A line under ``torchrun`` is checked as a job
of that many processes. ``nasrun show`` lines run. ``nasrun report`` lines have their arguments parsed
against empty folders. ``python scripts/X.py`` lines must name a script and flags it has. A line with
a placeholder (``<date>``, ``genotype=X``) cannot run as written: it is counted, and what can be
checked of it still is.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
COMMANDS = ("search", "retrain", "pipeline", "show", "report", "select")
#: Markers of a command written as a template rather than a line to type as it is.
TEMPLATE = re.compile(r"<[^>]*>|\[[a-z=.]*\.\.\.\]|\[overrides\]|\.\.\.|=X\b|\bFOLDER\b|\[--|\[=")
#: Markdown files the code writes (``nasrun report``, scripts/collapse.py): named, never cited.
WRITTEN_MD = {"summary.md", "collapse.md"}


class Command(NamedTuple):
    page: str
    line: int
    text: str  # the logical line it came from
    tokens: tuple[str, ...]  # after "nasrun" (command first) or after "python"
    world: int  # processes when started by torchrun, else 1

    def where(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


# ---------------------------------------------------------------------------------------- reading
def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def fenced_blocks(text: str) -> Iterator[tuple[str, int, str]]:
    """(language, first line number, body) of every fenced block, however deeply indented."""
    pattern = re.compile(r"^([ \t]*)```([\w-]*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)
    for m in pattern.finditer(text):
        indent = len(m.group(1))
        body = "\n".join(line[indent:] if line[:indent].isspace() else line for line in m.group(3).splitlines())
        yield m.group(2).lower(), text.count("\n", 0, m.start()) + 2, body


def prose(text: str) -> str:
    """The text outside fenced blocks (same length: fences blanked, so line numbers hold)."""
    return re.sub(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text,
                  flags=re.S | re.M)


def logical_lines(body: str, first: int) -> Iterator[tuple[int, str]]:
    """Lines with their backslash continuations joined, and the number of the first."""
    pending, start = "", first
    for i, line in enumerate(body.splitlines()):
        if not pending:
            start = first + i
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def _segments(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ``&&``, ``||``, ``;``, ``|``), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            segments.append([])
        else:
            segments[-1].append(token)
    return [s for s in segments if s]


def _world(segment: list[str]) -> int:
    """Processes of a torchrun segment: nproc_per_node x nnodes (1 without torchrun)."""
    if "torchrun" not in segment:
        return 1
    values = {}
    for token in segment:
        key, _, value = token.partition("=")
        if key in ("--nproc_per_node", "--nproc-per-node", "--nnodes") and value.isdigit():
            values[key.replace("-per-", "_per_")] = int(value)
    return values.get("--nproc_per_node", 1) * values.get("--nnodes", 1)


def commands_of(segment: list[str]) -> Iterator[tuple[str, tuple[str, ...], int]]:
    """("nasrun", tokens after nasrun, world) or ("python", tokens after python, 1) of one simple command."""
    for i, token in enumerate(segment):
        if token == "nasrun" and i + 1 < len(segment) and segment[i + 1] in COMMANDS:
            yield "nasrun", tuple(segment[i + 1:]), _world(segment[:i])
            return
    if segment[0] in ("python", "python3") and len(segment) > 1:
        yield "python", tuple(segment[1:]), 1


def _inline_code(text: str) -> Iterator[tuple[int, str]]:
    body = prose(text)
    for m in re.finditer(r"`((?:nasrun (?:%s)|python scripts/)[^`]*)`" % "|".join(COMMANDS), body):
        if m.group(1).startswith("python") or "=" in m.group(1):  # else a command named, not a line to type
            yield body.count("\n", 0, m.start()) + 1, m.group(1)


@lru_cache(maxsize=None)
def documented() -> tuple[list[Command], list[Command]]:
    """Every ``nasrun`` and every ``python`` command of the pages, each distinct line once."""
    nasrun_lines, python_lines, seen = [], [], set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        lines = [(n, line) for lang, first, body in fenced_blocks(text) if lang in SHELL_FENCES
                 for n, line in logical_lines(body, first)]
        for n, line in [*lines, *_inline_code(text)]:
            try:
                segments = _segments(line)
            except ValueError as exc:  # an unbalanced quote: the line cannot be typed as shown
                pytest.fail(f"{_rel(page)}:{n}: {line}: {exc}")
            for segment in segments:
                for kind, tokens, world in commands_of(segment):
                    if (kind, tokens, world) in seen:
                        continue
                    seen.add((kind, tokens, world))
                    cmd = Command(_rel(page), n, " ".join(line.split()), tokens, world)
                    (nasrun_lines if kind == "nasrun" else python_lines).append(cmd)
    return nasrun_lines, python_lines


def _templated(cmd: Command) -> bool:
    return bool(TEMPLATE.search(" ".join(cmd.tokens)))


def _of(command: str) -> list[Command]:
    return [c for c in documented()[0] if c.tokens[0] == command]


# --------------------------------------------------------------------------------------- commands
def test_the_pages_show_commands_of_every_kind():
    """The reader finds the commands (a broken reader would pass every check below vacuously)."""
    nasrun_lines, python_lines = documented()
    kinds = Counter(c.tokens[0] for c in nasrun_lines)
    assert all(kinds[k] >= 1 for k in COMMANDS), kinds
    assert kinds["search"] >= 20 and len(nasrun_lines) >= 50, kinds
    assert any(c.world > 1 for c in nasrun_lines)  # the torchrun lines are read
    assert any("hydra/launcher=slurm" in c.tokens for c in nasrun_lines)
    assert len(python_lines) >= 10
    quickstart = [c for c in nasrun_lines if c.page == "README.md" and "experiment=quickstart" in c.tokens
                  and "hydra.run.dir=outputs/quickstart/search" in c.tokens]
    assert quickstart, "the README's quickstart search is read"


def _local_stand_ins(typed, tmp_path: Path):
    """A documented benchmark table that is not on this machine: an empty file in its place (only existence
    is checked before a run starts)."""
    path = getattr(typed.benchmark, "path", "")
    if path and not Path(path).expanduser().exists():
        stand_in = tmp_path / Path(path).name
        stand_in.touch()
        typed = dataclasses.replace(typed, benchmark=dataclasses.replace(typed.benchmark, path=str(stand_in)))
    return typed


def _genotype_here(spec: str) -> bool:
    from nasrun.genotype.genotype import PUBLISHED

    names = {n.lower() for n in PUBLISHED}
    return spec.lower() in names or spec.startswith("|") or Path(spec).expanduser().exists()


@lru_cache(maxsize=None)
def _typed(command: str, job: tuple[str, ...]):
    from nasrun.config.compose import compose, to_typed

    return to_typed(compose(command, list(job)))


def _check_job_line(cmd: Command, tmp_path: Path) -> str:
    """Compose every job of a search/retrain/pipeline line and check it as the command line would; return
    "checked", or "composed" when a job names a run folder that is not here (a retrain's genotype)."""
    from nasrun.cli.preflight import check_job
    from nasrun.config.overrides import check_output_dirs, is_multirun, jobs, override_tokens
    from nasrun.parallel.launch import check_multi_task_jobs, check_torchrun

    command, args = cmd.tokens[0], list(cmd.tokens[1:])
    flags = [a for a in args if a.startswith("-") and a not in ("-m", "--multirun")]
    assert not flags, f"{cmd.where()}: flags a job line does not take: {flags}"
    tokens = override_tokens(args)
    stray = [a for a in args if a not in tokens and a not in ("-m", "--multirun")]
    assert not stray, f"{cmd.where()}: arguments that are not overrides: {stray}"
    multirun = is_multirun(args)
    if cmd.world > 1:
        check_torchrun(command, multirun)
    check_output_dirs(tokens)
    outcome = "checked"
    for job in jobs(tokens, multirun):
        typed = _local_stand_ins(_typed(command, tuple(job)), tmp_path)
        if command == "retrain" and not _genotype_here(typed.genotype):
            outcome = "composed"  # the genotype is a run folder of the reader's; its recipe and keys composed
            continue
        check_job(command, typed)
    check_multi_task_jobs(command, args)
    return outcome


def test_every_documented_job_line_composes_and_passes_the_command_line_checks(tmp_path, monkeypatch):
    """A sweep of more than 16 jobs is checked one swept value at a time (as the command line checks a sweep
    too large to compose every job of), so the 108-job robustness sweep takes a second, not twenty."""
    from nasrun.config import overrides
    from nasrun.errors import NasrunError

    monkeypatch.setattr(overrides, "MAX_PRECHECKED_JOBS", 16)

    lines = [c for c in documented()[0] if c.tokens[0] in ("search", "retrain", "pipeline")]
    outcomes: Counter = Counter()
    problems = []
    for cmd in lines:
        if _templated(cmd):
            outcomes["placeholder"] += 1
            continue
        monkeypatch.setenv("WORLD_SIZE", str(cmd.world))  # a torchrun line is a job of that many processes
        try:
            outcomes[_check_job_line(cmd, tmp_path)] += 1
        except NasrunError as exc:
            problems.append(f"{cmd.where()}\n    -> {exc}")
    monkeypatch.delenv("WORLD_SIZE")
    assert not problems, "documented commands that nasrun refuses:\n" + "\n".join(problems)
    assert outcomes["checked"] >= 30, outcomes


def test_every_documented_show_line_runs_and_prints_the_documented_sizes(tmp_path, monkeypatch, capsys):
    """Each show line runs; the sizes the pages quote (the best NB201 cell in spaces.md, DARTS_V2 in the
    ImageNet network in retraining.md) are what their own show lines print."""
    from nasrun.cli.dispatch import main

    monkeypatch.chdir(tmp_path)  # --plot draws into the current folder
    printed = {}
    for cmd in _of("show"):
        if _templated(cmd):
            continue
        try:
            main(list(cmd.tokens))
        except SystemExit as exc:
            pytest.fail(f"{cmd.where()}: exit {exc.code}: {capsys.readouterr().err.strip()}")
        out = capsys.readouterr().out
        assert "parameters:" in out and "architectures" in out, f"{cmd.where()}:\n{out}"
        printed[cmd.tokens[1:]] = out
    assert len(printed) >= 4
    assert list(tmp_path.glob("cells_*.png")), "the --plot line drew its cells"

    nb201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    out = printed[(f"genotype={nb201}", "recipe=nb201")]
    assert "1,073,466" in out and "153.3M" in out, out
    assert "1,073,466 parameters and 153.3M" in (DOCS / "spaces.md").read_text(encoding="utf-8")
    table = (DOCS / "retraining.md").read_text(encoding="utf-8")
    params, macs = re.search(r"\| `DARTS_V2` \| ([\d.]+M) \(4\.7M\) \| ([\d.]+M) \|", table).groups()
    out = printed[("genotype=DARTS_V2", "recipe=imagenet")]
    assert f"parameters: {params}" in out and f"multiply-adds: {macs}" in out, out


def test_every_documented_report_line_parses(tmp_path, capsys):
    """Arguments of every report line (folders replaced by an empty one): only "no run folders" may answer."""
    from nasrun.report.summary import main as report_main

    empty = tmp_path / "empty"
    empty.mkdir()
    checked = 0
    for cmd in _of("report"):
        args, out_next = [], False
        for a in cmd.tokens[1:]:
            args.append(str(tmp_path / "out") if out_next else a if a.startswith("-") else str(empty))
            out_next = a == "--out"
        try:
            status = report_main(args)
        except SystemExit as exc:
            status = exc.code
        err = capsys.readouterr().err
        assert status == 2 and "no run folders" in err, f"{cmd.where()}: {err.strip()}"
        checked += 1
    assert checked >= 4


def test_every_documented_select_line_takes_keys_select_accepts():
    """Each select line's arguments pass select's own parsing, and its selection keys compose."""
    from nasrun.cli.select import _pairs
    from nasrun.config.compose import compose, to_typed

    checked = 0
    for cmd in _of("select"):
        pairs = _pairs(list(cmd.tokens[1:]))
        assert "genotype" in pairs, cmd.where()
        keys = [f"{k}={v}" for k, v in pairs.items() if k.startswith("selection")]
        reads = any(k in pairs for k in ("selection.rule", "selection.threshold"))  # select's own default
        default = [] if "selection" in pairs else ["selection=argmax" if reads else "selection=perturbation"]
        selection = to_typed(compose("search", ["space=darts", *default, *keys])).selection
        assert selection.tunes or reads, cmd.where()  # a selection to run, or a rule to read the weights by
        checked += 1
    assert checked >= 1


def _script_flags(script: Path) -> set[str]:
    return set(re.findall(r"""["'](--[\w-]+)["']""", script.read_text(encoding="utf-8")))


def test_every_documented_python_line_names_what_exists():
    """`python scripts/X.py --flag`: the script and its flags; `python -c "from nasrun.x import a"`: the names."""
    import importlib

    checked = 0
    for cmd in documented()[1]:
        if _templated(cmd):
            continue
        if cmd.tokens[0] == "-c":
            for module, names in re.findall(r"from (nasrun[\w.]*) import ([\w, ]+)", cmd.tokens[1]):
                mod = importlib.import_module(module)
                missing = [n.strip() for n in names.split(",") if not hasattr(mod, n.strip())]
                assert not missing, f"{cmd.where()}: {module} has no {missing}"
            checked += 1
            continue
        if cmd.tokens[0] in ("-m",):
            continue
        script = ROOT / cmd.tokens[0]
        assert script.is_file(), f"{cmd.where()}: no {cmd.tokens[0]}"
        unknown = {t.split("=")[0] for t in cmd.tokens[1:] if t.startswith("--")} - _script_flags(script)
        assert not unknown, f"{cmd.where()}: {cmd.tokens[0]} has no {sorted(unknown)}"
        checked += 1
    assert checked >= 10


# ------------------------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose(page.read_text(encoding="utf-8")), re.M)}


def test_every_link_of_the_pages_resolves_to_a_file_and_heading():
    problems = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                problems.append(f"{_rel(page)}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                problems.append(f"{_rel(page)}: {target}: no heading #{anchor} in {_rel(file)}")
    assert not problems, "\n".join(problems)


def test_the_readme_is_short_and_maps_every_docs_page_by_a_relative_link():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)(?:#[\w-]*)?\)", readme))
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages and pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"
    assert "github.com" not in readme  # the docs are linked relatively, so they work in any checkout or fork


def _resolves(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_module_name_and_repository_path_the_pages_name_exists():
    problems = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for dotted in set(re.findall(r"\b(nasrun(?:\.\w+)+)\b(?![/\w])", text)):
            if not _resolves(dotted):
                problems.append(f"{_rel(page)}: {dotted}")
        for path in set(re.findall(r"(?<![\w/.<])((?:nasrun|scripts|tests|docs)/[\w./*-]*[\w*/])", text)):
            if re.search(r"/[A-Z]{3,}\b", path):  # a placeholder such as nasrun/conf/method/NAME.yaml
                continue
            if not list(ROOT.glob(path.rstrip("/"))):
                problems.append(f"{_rel(page)}: {path}")
    assert not problems, "names and paths that do not exist:\n" + "\n".join(sorted(problems))


# ------------------------------------------------------------------------------- citations
def _shipped_text_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for folder in ("nasrun", "scripts", "tests", "docs"):
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in
                  (".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".sh")]
    return files


def test_no_file_cites_a_markdown_file_that_is_not_in_the_repository():
    problems = []
    for file in _shipped_text_files():
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            for name in re.findall(r"(?<![\w/.-])([\w./-]*[\w-]+\.md)\b", line):
                if Path(name).name in WRITTEN_MD:
                    continue
                if not any((folder / name).is_file() for folder in (file.parent, ROOT, DOCS)):
                    problems.append(f"{_rel(file)}:{n}: {name}")
            if re.search(r"\.md\s§", line):  # a section of a numbered reference document; the docs have none
                problems.append(f"{_rel(file)}:{n}: {line.strip()}")
    assert not problems, "citations of Markdown files that do not ship:\n" + "\n".join(problems)


def test_no_file_points_outside_the_repository():
    outside = re.compile("|".join([r"\.\./" + "shared", r"(?<![\w.])" + "spec" + "/", "/work/" + "shared"]))
    problems = [f"{_rel(file)}:{n}: {line.strip()}" for file in _shipped_text_files()
                for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert not problems, "\n".join(problems)


if __name__ == "__main__":  # pragma: no cover - a listing for whoever edits the docs
    for c in documented()[0]:
        print(("[placeholder] " if _templated(c) else "") + c.where())
