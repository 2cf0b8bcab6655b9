"""Generated command lines (seeded): each is refused with one line and exit 2, or accepted as a valid command line.

Every case carries what must happen to it: ``refuse`` (a fault of a known class: an interpolation that
cannot be resolved, a key the command does not read, an override that cannot be parsed, an empty
argument, a number too long to read, a true/false key given something else, a deleted key, a key
added where nothing reads it, a sweep of nothing, a path past the system's limit, an unknown key, a
value out of range, a bad flag), ``accept`` (a valid line), or ``either`` (a random edit of a valid
line, or a value of any type for any key: no traceback, no hang, and one of the two clean outcomes).

The cases go through the entry point in-process, each under a time limit. An accepted line must be
one Hydra accepts too: a single job runs with ``--cfg job`` (Hydra composes and prints it, nothing
runs); a sweep's Hydra application is not started (every one of its jobs has already been composed
and checked). A sample also runs through the real console script, which must answer the same way.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import pytest

SEED = 21
COUNT = 520
CONSOLE_SAMPLE = 20
CASE_SECONDS = 60  # far above the slowest case (a glob sweep composes nine methods); a hang is longer

VALID = {
    "search": ["dataset=digits", "search.epochs=3", "supernet.C=8", "seed=5", "method=amended", "precision=bf16",
               "channels_last=true", "progress=False", "device=cpu", "space=nb201", "search.lr=0.05",
               "dataset.subset=0.5", "threads=1", "experiment=quickstart", "seed=${search.epochs}",
               "estimator=amended", "logger=none"],
    "retrain": ["recipe=quick", "dataset=digits", "seed=1", "recipe.epochs=2", "channels_last=false",
                "precision=fp32", "recipe.C=8", "experiment=quickstart", "seed=${recipe.epochs}", "threads=2"],
    "pipeline": ["dataset=digits", "search.epochs=1", "recipe.epochs=1", "experiment=quickstart", "recipe=quick",
                 "method=darts_2nd", "seed=0", "supernet.C=4"],
}
INT_KEYS = {"search": ["seed", "search.epochs", "supernet.C", "search.batch_size", "dataset.split_seed"],
            "retrain": ["seed", "recipe.epochs", "recipe.C", "recipe.batch_size"],
            "pipeline": ["seed", "search.epochs", "recipe.epochs", "supernet.layers"]}
BOOL_KEYS = {"search": ["channels_last", "progress", "supernet.edge_norm", "search.track_eigenvalue",
                        "dataset.download"],
             "retrain": ["channels_last", "recipe.auxiliary", "recipe.nesterov", "recipe.unify"],
             "pipeline": ["channels_last", "supernet.fused", "recipe.auxiliary", "search.sync_bn"]}
IGNORED = {"search": ["recipe.epochs=3", "recipe.C=8", "genotype=DARTS_V2", "recipe=quick", "recipe.unify=true"],
           "retrain": ["search.epochs=1", "supernet.C=4", "method=amended", "estimator=amended", "schedule.stages=2",
                       "search.compile=graph", "benchmark.path=x.csv"],
           "pipeline": ["genotype=DARTS_V2", "genotype=PDARTS"]}
READ_KEYS = {"search": ["seed", "search.epochs", "method", "dataset", "progress", "supernet.C"],
             "retrain": ["seed", "recipe.C", "recipe", "progress", "genotype"],
             "pipeline": ["seed", "search.epochs", "recipe.epochs", "method"]}
#: Values Hydra's override grammar cannot read (checked against the parser when this list was made).
UNPARSEABLE = ["[1", "[1,2", "{a:", "'x", '"x', "1)", "(1", "[,]", "${", "=", ",", "[]]", "{]", "x'y'", "[1,,2]",
               "{a:1,,}", "choice(", "range(a,b)", "glob(", ")", "'", "a=b=c", "$(x)", "[[1]", "}"]
NOT_BOOLEAN = ["2", "0", "1", "-1", "yes", "no", "on", "off", "'true'", "1.5", "[true]", "null", "y"]
MUTATION_CHARS = "abcxyz019[]{}()'\"$,=~+@:\\ ._-/*%"
#: Values of every type and shape, for any key ("either": what fits is taken, the rest refused in one line).
ANY_VALUES = ["0", "-1", "1e308", "-inf", "nan", "true", "null", "abc", "[]", "[1,2]", "{a:1}", "''", "'a b'",
              "${seed}", "1,2", "[[1]]", "{}", "0.5", "1e-320", "99999999999999999999", "'${oc.env:HOME}'", "~", "+1"]


class Case(NamedTuple):
    kind: str  # the fault class (or "valid", "mutated")
    command: str
    args: tuple[str, ...]
    expect: str  # refuse | accept | either

    @property
    def multirun(self) -> bool:
        return "-m" in self.args or "--multirun" in self.args


def _base(rng: random.Random, command: str) -> list[str]:
    """A few valid overrides, one per key (a key twice would be a different question)."""
    chosen: dict[str, str] = {}
    for piece in rng.sample(VALID[command], k=rng.randint(0, 3)):
        chosen.setdefault(piece.split("=")[0], piece)
    if command == "retrain":
        chosen["genotype"] = rng.choice(["genotype=DARTS_V2", "genotype=PDARTS", "genotype=DARTS_V1"])
    return list(chosen.values())


def _long_dir(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "/tmp/" + "n" * rng.randint(256, 400)  # one name past NAME_MAX
    size = rng.randint(150, 250)
    return "/tmp/" + "/".join(["p" * size] * (4200 // size + rng.randint(1, 10)))  # past PATH_MAX


def _fault(rng: random.Random, command: str, kind: str) -> tuple[list[str], str]:
    """(the arguments that carry the fault, what must happen) for one fault class."""
    key = rng.choice(INT_KEYS[command])
    n = rng.randint(0, 999)
    choices: dict[str, tuple[list[str], str]] = {
        "valid": ([], "accept"),
        "interpolation": ([rng.choice([f"{key}=${{oc.env:NASRUN_FUZZ_UNSET_{n}}}", f"{key}=${{{key}}}",
                                       f"{key}=${{no.such.key{n}}}", f"{key}=${{oc.env:HOME}}",
                                       f"hydra.run.dir=${{oc.env:NASRUN_FUZZ_UNSET_{n}}}/x"])], "refuse"),
        "ignored": ([rng.choice(IGNORED[command])], "refuse"),
        "ignored_sweep": (["-m", rng.choice(IGNORED[command]).split("=")[0] + "=1,2"], "refuse"),
        "unparseable": ([f"{key}={rng.choice(UNPARSEABLE)}"], "refuse"),
        "empty": ([rng.choice(["", " ", "\t"])], "refuse"),
        "huge": ([f"{key}={rng.choice(['', '-'])}{'9' * rng.choice([4301, 5000, 10_000, 100_000])}"], "refuse"),
        "not_boolean": ([f"{rng.choice(BOOL_KEYS[command])}={rng.choice(NOT_BOOLEAN)}"], "refuse"),
        "deletion": ([f"~{rng.choice(READ_KEYS[command])}"], "refuse"),
        "bad_append": ([rng.choice(["+hydra.foo=1", "+hydra.run.foo=1", "+hydra.job.nope=x", "+seed=1",
                                    f"+nope{n}=1", "+hydra.launcher.nope=2"])], "refuse"),
        "open_append": ([f"+hydra.job.env_set.NASRUN_FUZZ_{n}=1"], "accept"),
        "force_set": ([f"++{rng.choice(INT_KEYS[command][:2])}={rng.randint(1, 4)}"], "accept"),
        "force_new": ([rng.choice([f"++nope{n}=1", "++seeds=2", f"++{key}x=3"])], "refuse"),
        "empty_sweep": (["-m", rng.choice(["seed=range(3,3)", "seed=range(5,1)", "seed=glob(*)",
                                           f"{key}=glob(a*)", "recipe=glob(zzz*)" if command != "search"
                                           else "method=glob(zzz*)", "seed=interval(0,1)"])], "refuse"),
        "long_path": ([f"hydra.run.dir={_long_dir(rng)}"], "refuse"),
        "unknown_key": ([rng.choice(["serach.epochs=2", "seeds=1", "supernet.CC=4", "recipe.epoch=2",
                                     f"nope{n}.key=1"])], "refuse"),
        "out_of_range": ([rng.choice([f"{key}=-1", f"{key}=-{n + 2}", "device=tpu", "precision=fp16", "threads=0",
                                      "seed=4294967296"])], "refuse"),
        "bad_flag": (rng.choice([["--frobnicate"], ["--cfg", "yaml"], ["-x"], ["-m", "--cfg", "job"],
                                 ["--info", "--cfg", "job"]]), "refuse"),
        "sweep": (["-m", rng.choice(["seed=0,1", "seed=range(0,2)", f"{INT_KEYS[command][0]}=3,4"])], "accept"),
    }
    return choices[kind]


FAULT_KINDS = ["valid", "interpolation", "ignored", "ignored_sweep", "unparseable", "empty", "huge", "not_boolean",
               "deletion", "bad_append", "open_append", "force_set", "force_new", "empty_sweep", "long_path",
               "unknown_key", "out_of_range", "bad_flag", "sweep", "mutated", "any_value"]


@lru_cache(maxsize=None)
def _keys(command: str) -> tuple[str, ...]:
    """Every key of the command's composed config (the axis options' keys of the default method included)."""
    from nasrun.config.compose import compose
    from nasrun.config.compose_errors import known_keys
    from nasrun.config.overrides import READS

    base = ["genotype=DARTS_V2", "dataset=digits"] if command == "retrain" else []
    return tuple(k for k in known_keys(compose(command, base)) if k.split(".")[0] in READS[command])


def _any_value(rng: random.Random, command: str) -> list[str]:
    """A valid line and one key it reads given a value of any type."""
    base = _base(rng, command)
    key = rng.choice(_keys(command))
    return [a for a in base if a.split("=")[0] != key] + [f"{key}={rng.choice(ANY_VALUES)}"]


def _mutated(rng: random.Random, command: str) -> list[str]:
    """A valid line with one argument edited at random (inserted, deleted or replaced characters)."""
    args = _base(rng, command) or [rng.choice(VALID[command])]
    i = rng.randrange(len(args))
    text = list(args[i])
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text) + 1)
        edit = rng.choice(["insert", "delete", "replace"])
        if edit == "insert" or not text:
            text.insert(at, rng.choice(MUTATION_CHARS))
        elif edit == "delete":
            del text[min(at, len(text) - 1)]
        else:
            text[min(at, len(text) - 1)] = rng.choice(MUTATION_CHARS)
    args[i] = "".join(text)
    return args


def _arrange(rng: random.Random, base: list[str], extra: list[str]) -> list[str]:
    """The base overrides and the fault's arguments in a random order; a flag keeps its value beside it, and a
    base override of a key the fault sets is left out (the fault is what the line says about that key)."""
    typed = {a.lstrip("+~").split("=")[0] for a in extra}
    words = [[a] for a in base if a.split("=")[0] not in typed]
    group: list[str] = []
    for a in extra:
        if group and group[-1] in ("--cfg", "-c") and not a.startswith("-"):
            group.append(a)  # the flag's value
            continue
        if group:
            words.insert(rng.randint(0, len(words)), group)
        group = [a]
    if group:
        words.insert(rng.randint(0, len(words)), group)
    return [a for word in words for a in word]


def generate(count: int, seed: int) -> list[Case]:
    """``count`` cases, every fault class in turn, each on a random command with a random valid base."""
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        kind = FAULT_KINDS[i % len(FAULT_KINDS)]
        command = rng.choice(list(VALID))
        if kind in ("mutated", "any_value"):
            made = _mutated(rng, command) if kind == "mutated" else _any_value(rng, command)
            cases.append(Case(kind, command, tuple(made), "either"))
            continue
        extra, expect = _fault(rng, command, kind)
        cases.append(Case(kind, command, tuple(_arrange(rng, _base(rng, command), extra)), expect))
    return cases


def _with_cfg(case: Case) -> list[str]:
    """The arguments as run: a single job is only printed (``--cfg job``), never run."""
    args = list(case.args)
    if not case.multirun and not any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in args):
        args += ["--cfg", "job"]
    return [case.command, *args]


class Hang(BaseException):
    """The case ran past its time limit."""


def _alarm(signum, frame) -> None:
    raise Hang()


def run_in_process(case: Case, capsys) -> tuple[str, str]:
    """(outcome, detail): outcome is accepted, refused, or broken (anything else: a traceback, another exit)."""
    from nasrun.cli.dispatch import main

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    code: object = 0
    escaped = None
    try:
        main(_with_cfg(case))
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:  # noqa: BLE001 - what escapes the entry point is a traceback for a user
        escaped = exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        err = capsys.readouterr().err
    if isinstance(escaped, Hang):
        return "hang", ""
    if escaped is not None:
        return "broken", f"{type(escaped).__name__}: {escaped}"[:300]
    return _outcome(case, code, err)


def _outcome(case: Case, code: object, err: str) -> tuple[str, str]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code in (0, None) and not lines and "Traceback" not in err:
        return "accepted", ""
    if code == 2 and len(lines) == 1 and lines[0].startswith(f"nasrun {case.command}: error: "):
        return "refused", lines[0][:300]
    return "broken", f"exit {code}: {err.strip()[-600:]}"


def _judge(cases: list[Case], outcomes: list[tuple[str, str]]) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {"broken": [], "hang": [], "wrong accept": [], "wrong refusal": []}
    for case, (outcome, detail) in zip(cases, outcomes):
        shown = f"[{case.kind}] nasrun {' '.join(a[:80] for a in _with_cfg(case))}: {detail}"
        if outcome in ("broken", "hang"):
            problems[outcome].append(shown)
        elif case.expect == "refuse" and outcome == "accepted":
            problems["wrong accept"].append(shown)
        elif case.expect == "accept" and outcome == "refused":
            problems["wrong refusal"].append(shown)
    return problems


def _console_script() -> list[str]:
    found = shutil.which("nasrun")
    return [found] if found else [sys.executable, "-m", "nasrun"]


def run_console(case: Case, cwd: Path) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    try:
        proc = subprocess.run([*_console_script(), *_with_cfg(case)], cwd=cwd, capture_output=True, text=True,
                              env=env, timeout=180)
    except subprocess.TimeoutExpired:
        return "hang", ""
    return _outcome(case, proc.returncode, proc.stderr)


def _console_sample(cases: list[Case], seed: int) -> list[Case]:
    """Cases whose outcome is known and that never start a job: one of each class first, then at random."""
    safe = [c for c in cases if c.expect != "either" and not (c.multirun and c.expect == "accept")]
    rng = random.Random(seed)
    rng.shuffle(safe)
    by_kind: dict[str, Case] = {}
    for c in safe:
        by_kind.setdefault(c.kind, c)
    sample = list(by_kind.values())[:CONSOLE_SAMPLE]
    return sample + [c for c in safe if c not in sample][: CONSOLE_SAMPLE - len(sample)]


@pytest.fixture
def quiet_sweeps(monkeypatch, tmp_path):
    """Cases run in an empty folder; a sweep's Hydra application is not started (its jobs are already checked)."""
    from nasrun.cli import apps

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nasrun"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    real = dict(apps.APPS)

    def launch(command: str):
        def app() -> None:
            if any(a in ("-m", "--multirun") for a in sys.argv):
                return None  # every job was composed and checked; running the sweep would run searches
            return real[command]()
        return app

    monkeypatch.setattr(apps, "APPS", {c: launch(c) for c in real})
    return tmp_path


def test_the_generator_covers_every_class_and_is_seeded():
    cases = generate(len(FAULT_KINDS) * 3, SEED)
    assert Counter(c.kind for c in cases) == {k: 3 for k in FAULT_KINDS}
    assert cases == generate(len(FAULT_KINDS) * 3, SEED)
    assert {c.expect for c in cases} == {"refuse", "accept", "either"}


def test_one_case_of_each_class_is_answered_cleanly(quiet_sweeps, capsys):
    cases = generate(len(FAULT_KINDS), SEED + 1)
    problems = _judge(cases, [run_in_process(c, capsys) for c in cases])
    assert not any(problems.values()), problems


@pytest.mark.slow
def test_generated_command_lines_are_refused_in_one_line_or_accepted(quiet_sweeps, capsys):
    started = time.monotonic()
    cases = generate(COUNT, SEED)
    outcomes = [run_in_process(c, capsys) for c in cases]
    problems = _judge(cases, outcomes)
    counts = Counter(outcome for outcome, _ in outcomes)
    with capsys.disabled():
        print(f"\n{len(cases)} generated command lines in {time.monotonic() - started:.0f} s: "
              f"{dict(counts)}; " + ", ".join(f"{k}: {len(v)}" for k, v in problems.items()))
    assert len(cases) >= 500
    assert not any(problems.values()), {k: v[:10] for k, v in problems.items() if v}
    # the console script answers a sample the same way as the entry point in-process
    sample = _console_sample(cases, SEED)
    assert len(sample) >= CONSOLE_SAMPLE
    expected = dict(zip(cases, outcomes))
    mismatched = [(c, run_console(c, quiet_sweeps), expected[c][0]) for c in sample]
    mismatched = [(c.args, got, want) for c, got, want in mismatched if got[0] != want]
    assert not mismatched, mismatched
