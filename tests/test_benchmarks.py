"""Benchmark tables: exact lookups in a made-up NB201 CSV table, refusals of bad tables, the API path
through a stand-in package module, and the CSV export round trip."""

from __future__ import annotations

import itertools
import os
import random
import socket
import sys
import time
import types
import zlib
from pathlib import Path
from typing import Any

import pytest

from nasrun.genotype.benchmarks import (API_METRICS, BenchmarkError, BenchmarkTable, check_table_path, export_csv,
                                        load_table)
from nasrun.errors import NasrunError
from nasrun.genotype.genotype import NB201_OPS, PUBLISHED, parse_nb201

# NAS-Bench-201 (Dong & Yang, ICLR 2020): the best CIFAR-10 cell (94.37%) and the all-skip collapse cell (54.30%).
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
METRICS = ["cifar10_valid", "cifar10_test", "cifar100_test", "imagenet16_120_test"]
CHOSEN = {BEST: [91.61, 94.37, 73.51, 47.31], SKIP: [49.08, 54.30, 15.61, 16.32]}
ROWS = 302


def arch_of(ops: tuple[str, ...]) -> str:
    return f"|{ops[0]}~0|+|{ops[1]}~0|{ops[2]}~1|+|{ops[3]}~0|{ops[4]}~1|{ops[5]}~2|"


def value(arch: str, j: int) -> float:
    """A made-up accuracy, recomputable from the arch (two decimals, like the official numbers)."""
    if arch in CHOSEN:
        return CHOSEN[arch][j]
    return (1000 + zlib.crc32(f"{arch}/{j}".encode()) % 8500) / 100


def sample_archs() -> list[str]:
    """300 of the 15,625 NB201 cells (seeded) plus the two named ones."""
    every = [arch_of(ops) for ops in itertools.product(NB201_OPS, repeat=6)]
    assert len(every) == 15625
    picks = [a for a in random.Random(201).sample(every, 310) if a not in CHOSEN][:ROWS - 2]
    return picks[:100] + [BEST] + picks[100:200] + [SKIP] + picks[200:]


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def table_lines(archs: list[str]) -> list[str]:
    return ["arch," + ",".join(METRICS)] + [",".join([a, *(str(value(a, j)) for j in range(len(METRICS)))])
                                           for a in archs]


@pytest.fixture(scope="module")
def archs() -> list[str]:
    return sample_archs()


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory, archs: list[str]) -> Path:
    return write_csv(tmp_path_factory.mktemp("bench") / "nb201.csv", table_lines(archs))


@pytest.fixture(scope="module")
def table(table_path: Path) -> BenchmarkTable:
    return load_table(table_path)


def expected(arch: str) -> dict[str, float]:
    return {f"bench_{m}": value(arch, j) for j, m in enumerate(METRICS)}


# ------------------------------------------------------------------------------------- lookups
def test_lookup_exact_values(table: BenchmarkTable, table_path: Path, archs: list[str]) -> None:
    assert len(table) == ROWS and table.metrics == METRICS and table.path == table_path and table.kind == "csv"
    assert table.lookup(BEST) == {"bench_cifar10_valid": 91.61, "bench_cifar10_test": 94.37,
                                  "bench_cifar100_test": 73.51, "bench_imagenet16_120_test": 47.31}
    assert table.lookup(SKIP)["bench_cifar10_test"] == 54.30
    for arch in archs:
        assert table.lookup(arch) == expected(arch)


def test_lookup_by_genotype_and_non_canonical_string(table: BenchmarkTable) -> None:
    assert table.lookup(parse_nb201(BEST)) == expected(BEST)
    assert table.lookup(f"  {SKIP}\n") == expected(SKIP)
    assert table.lookup(BEST.replace("|+|", "||+||")) == expected(BEST)  # doubled bars parse the same


def test_csv_arch_cells_are_canonicalised(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", [" arch , cifar10_test", f"  {BEST} , 94.37", f'"{SKIP}",54.3', ""])
    table = load_table(path)
    assert table.metrics == ["cifar10_test"] and len(table) == 2
    assert table.lookup(BEST) == {"bench_cifar10_test": 94.37}
    assert table.lookup(parse_nb201(SKIP)) == {"bench_cifar10_test": 54.30}


def test_kind_csv_reads_any_name_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "table.txt", ["", "arch,cifar10_test", f"{BEST},94.37", ",", ""])
    assert load_table(path, kind="csv").lookup(BEST) == {"bench_cifar10_test": 94.37}


def test_spreadsheet_export_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(("\ufeffarch,cifar10_test\r\n" + f"{BEST},94.37\r\n").encode("utf-8"))
    assert load_table(path).lookup(BEST) == {"bench_cifar10_test": 94.37}


def test_whole_empty_column_is_dropped(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["arch,cifar10_test,notes", f"{BEST},94.37,", f"{SKIP},54.30, "])
    table = load_table(path)
    assert table.metrics == ["cifar10_test"] and table.lookup(SKIP) == {"bench_cifar10_test": 54.30}


def test_memory_bytes_is_about_the_array(table: BenchmarkTable) -> None:
    array = ROWS * len(METRICS) * 8
    assert array < table.memory_bytes < array + ROWS * 400


def test_export_csv_round_trip(table: BenchmarkTable, tmp_path: Path, archs: list[str]) -> None:
    out = export_csv(table, tmp_path / "copy.csv")
    again = load_table(out)
    assert again.metrics == table.metrics and len(again) == len(table)
    assert [a for a, _ in again.rows()] == archs
    for arch in archs:
        assert again.lookup(arch) == table.lookup(arch)


def test_export_refuses_to_overwrite_its_source(table_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "own.csv"
    copy.write_bytes(table_path.read_bytes())
    with pytest.raises(BenchmarkError, match="own source file"):
        export_csv(load_table(copy), copy)


# ------------------------------------------------------------------------------- lookup refusals
def test_unknown_arch_at_lookup_is_named(table: BenchmarkTable, archs: list[str]) -> None:
    missing = next(arch_of(ops) for ops in itertools.product(NB201_OPS, repeat=6) if arch_of(ops) not in archs)
    with pytest.raises(BenchmarkError, match="is not in the table") as err:
        table.lookup(missing)
    assert missing in str(err.value) and f"{ROWS} archs" in str(err.value)


def test_bad_string_at_lookup(table: BenchmarkTable) -> None:
    with pytest.raises(BenchmarkError, match="3 groups"):
        table.lookup("|nor_conv_3x3~0|")
    with pytest.raises(BenchmarkError, match="expected a Genotype or an NB201 arch string"):
        table.lookup(42)  # type: ignore[arg-type]


def test_darts_genotype_at_lookup(table: BenchmarkTable) -> None:
    with pytest.raises(BenchmarkError, match="covers only space=nb201") as err:
        table.lookup(PUBLISHED["DARTS"])
    assert isinstance(err.value, NasrunError) and "space=darts" in str(err.value)


# --------------------------------------------------------------------------------- table refusals
def refused(path: Path, *parts: str, kind: str = "auto") -> str:
    """Load must fail with one line holding every part."""
    with pytest.raises(BenchmarkError) as err:
        load_table(path, kind)
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)
    return message


def test_missing_file(tmp_path: Path) -> None:
    refused(tmp_path / "nope.csv", str(tmp_path / "nope.csv"), "no such file", "`arch` column",
            "NAS-Bench-201-v1_1-096897.pth", "NATS-tss-v1_0-3ffb9.pickle.pbz2", "Google Drive",
            "not by any package registry")


def test_empty_and_header_only(tmp_path: Path) -> None:
    refused(write_csv(tmp_path / "e.csv", []), "the file is empty")
    (tmp_path / "zero.csv").write_bytes(b"")
    refused(tmp_path / "zero.csv", "the file is empty")
    refused(write_csv(tmp_path / "h.csv", ["arch,cifar10_test"]), "no rows")


def test_header_problems(tmp_path: Path) -> None:
    refused(write_csv(tmp_path / "a.csv", ["cell,cifar10_test", f"{BEST},94.37"]), "line 1", "no `arch` column",
            "'cell'")
    refused(write_csv(tmp_path / "b.csv", [f"{BEST},94.37"]), "no `arch` column", "first row must be the header")
    refused(write_csv(tmp_path / "c.csv", ["arch", BEST]), "no metric column")
    refused(write_csv(tmp_path / "d.csv", ["arch,acc,acc", f"{BEST},1,2"]), "'acc' appears twice")
    refused(write_csv(tmp_path / "e.csv", ["arch,acc,", f"{BEST},1,2"]), "column 3 of the header has no name")


def test_bad_arch_string_names_the_line(tmp_path: Path, archs: list[str]) -> None:
    lines = table_lines(archs[:5])
    lines[4] = lines[4].replace("nor_conv", "sep_conv", 1).replace("skip_connect", "sep_conv", 1)
    bad = lines[4].split(",")[0]
    refused(write_csv(tmp_path / "t.csv", lines), "line 5", repr(bad)[:40], "is not an NB201 cell",
            "expected op~")
    refused(write_csv(tmp_path / "u.csv", ["arch,acc", f"{BEST},1", "|none~0|,2"]), "line 3", "'|none~0|'",
            "3 groups")


def test_long_bad_value_is_cut(tmp_path: Path) -> None:
    message = refused(write_csv(tmp_path / "t.csv", ["arch,acc", "x" * 5000 + ",1"]), "line 2")
    assert len(message) < 600


def test_duplicate_arch_names_both_lines(tmp_path: Path) -> None:
    refused(write_csv(tmp_path / "t.csv", ["arch,acc", f"{BEST},1", f"{SKIP},2", f" {BEST} ,3"]), "line 4",
            "already on line 2", BEST)


def test_non_numeric_and_non_finite_values(tmp_path: Path) -> None:
    refused(write_csv(tmp_path / "t.csv", ["arch,acc,top5", f"{BEST},1,2", f"{SKIP},94.1%,3"]), "line 3",
            "column 'acc'", "'94.1%'", "not a finite number")
    refused(write_csv(tmp_path / "u.csv", ["arch,acc", f"{BEST},nan"]), "line 2", "'nan'")
    refused(write_csv(tmp_path / "v.csv", ["arch,acc", f"{BEST},inf"]), "'inf'")


def test_some_empty_cells_are_refused(tmp_path: Path) -> None:
    refused(write_csv(tmp_path / "t.csv", ["arch,acc,top5", f"{BEST},1,2", f"{SKIP},3,"]), "line 3",
            "column 'top5'", "no value (1 of 2 rows")
    refused(write_csv(tmp_path / "u.csv", ["arch,acc", f"{BEST},", f"{SKIP}, "]), "every metric column is empty")


def test_wrong_field_count_and_bad_csv(tmp_path: Path) -> None:
    refused(write_csv(tmp_path / "t.csv", ["arch,acc", f"{BEST},1,2"]), "line 2", "3 fields, the header has 2")
    (tmp_path / "b.csv").write_bytes(b"arch,acc\n\xff\xfe\x00,1\n")
    refused(tmp_path / "b.csv", "not UTF-8")


def test_bad_kind_and_folder_as_csv(tmp_path: Path) -> None:
    refused(tmp_path, "expected one of auto, csv, nb201_api", kind="pandas")
    refused(tmp_path, "is a folder", kind="csv")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("make,what", [
    (lambda p: os.mkfifo(p), "is a named pipe (FIFO)"),
    (lambda p: p.symlink_to("/dev/zero"), "is a character device"),
    (lambda p: socket.socket(socket.AF_UNIX).bind(str(p)), "is a socket"),
])
@pytest.mark.parametrize("name,kind", [("table.csv", "auto"), ("table.csv", "csv"), ("NAS-Bench-201.pth", "auto"),
                                       ("x", "nb201_api")])
def test_a_table_that_is_not_a_regular_file_is_refused_before_opening(tmp_path: Path, make, what: str, name: str,
                                                                      kind: str) -> None:
    path = tmp_path / name
    make(path)
    started = time.perf_counter()
    with pytest.raises(BenchmarkError) as err:
        check_table_path(path, kind)
    assert str(err.value).startswith(f"benchmark.path={path}: {what}, not a regular file")
    refused(path, f"benchmark.path={path}: {what}", kind=kind)  # load_table checks first too
    assert time.perf_counter() - started < 1.0


def test_a_folder_is_a_table_only_in_the_official_format(tmp_path: Path) -> None:
    folder = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    folder.mkdir()
    assert check_table_path(folder) == folder and check_table_path(folder, "nb201_api") == folder
    (tmp_path / "t.csv").mkdir()
    with pytest.raises(BenchmarkError, match=r"t\.csv: is a folder, not a CSV file"):
        check_table_path(tmp_path / "t.csv")
    with pytest.raises(BenchmarkError, match="is a folder, not a CSV file"):
        check_table_path(folder, "csv")
    with pytest.raises(BenchmarkError, match="no such file or folder"):
        check_table_path(tmp_path / ("x" * 5000))  # too long for the system: absent, one line


# ------------------------------------------------------------------------------ the official file
def test_api_package_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nas_201_api", None)  # import now fails whatever is installed
    monkeypatch.setitem(sys.modules, "nats_bench", None)
    pth = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    pth.write_bytes(b"\x80")
    refused(pth, "pip install 'nasrun[nb201]'", "nas_201_api", "nas-bench-201", kind="nb201_api")
    refused(pth, "pip install 'nasrun[nb201]'", "not a .csv file")
    refused(tmp_path, "pip install 'nasrun[nb201]'", "nats_bench")
    txt = write_csv(tmp_path / "table.txt", ["arch,acc", f"{BEST},1"])
    refused(txt, "not a .csv file", "kind=csv")


class FakeAPI:
    """The calls nasrun makes on a NATS-Bench topology API, answering from a formula."""

    def __init__(self, archs: list[str], missing: str = "") -> None:
        self.archs, self.missing, self.calls = archs, missing, []
        self.arch2infos_dict = {i: "cached" for i in range(len(archs))}

    def __len__(self) -> int:
        return len(self.archs)

    def arch(self, i: int) -> str:
        return self.archs[i]

    def get_more_info(self, index: int, dataset: str, iepoch: Any = None, hp: str = "12",
                      is_random: Any = True) -> dict[str, float]:
        self.calls.append((dataset, hp, is_random))
        base = {"cifar10-valid": 10, "cifar10": 20, "cifar100": 30, "ImageNet16-120": 40}[dataset] + index
        info = {"train-accuracy": 99.0, "test-accuracy": base + 0.5}
        if dataset != "cifar10":
            info["valid-accuracy"] = base + 0.25
        if dataset == self.missing:
            del info["test-accuracy"]
        return info


def fake_nats(monkeypatch: pytest.MonkeyPatch, api: FakeAPI) -> list[tuple]:
    created: list[tuple] = []
    module = types.ModuleType("nats_bench")

    def create(path: str, space: str, fast_mode: bool = False, verbose: bool = True) -> FakeAPI:
        created.append((path, space, fast_mode, verbose))
        return api

    module.create = create  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nats_bench", module)
    return created


def test_api_path_with_a_stand_in_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeAPI([BEST, SKIP, " " + arch_of(("none",) * 6)])
    created = fake_nats(monkeypatch, api)
    folder = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    folder.mkdir()
    table = load_table(folder)
    assert created == [(str(folder), "topology", True, False)]
    assert {(hp, r) for _, hp, r in api.calls} == {("200", False)} and len(api.calls) == 3 * 4
    assert api.arch2infos_dict == {}  # each arch's cache dropped after its row is read
    assert table.kind == "nb201_api" and table.metrics == [m for m, _, _ in API_METRICS]
    assert table.lookup(SKIP) == {"bench_cifar10_valid": 11.25, "bench_cifar10_valid_test": 11.5,
                                  "bench_cifar10_test": 21.5, "bench_cifar100_valid": 31.25,
                                  "bench_cifar100_test": 31.5, "bench_imagenet16_120_valid": 41.25,
                                  "bench_imagenet16_120_test": 41.5}
    assert table.lookup(arch_of(("none",) * 6))["bench_cifar10_test"] == 22.5
    again = load_table(export_csv(table, tmp_path / "nb201.csv"))
    assert again.metrics == table.metrics and all(again.lookup(a) == table.lookup(a) for a in (BEST, SKIP))


def test_api_metric_missing_everywhere_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nats(monkeypatch, FakeAPI([BEST, SKIP], missing="cifar10-valid"))
    archive = tmp_path / "NATS-tss-v1_0-3ffb9.pickle.pbz2"
    archive.write_bytes(b"BZh")
    table = load_table(archive, kind="nb201_api")
    assert "cifar10_valid_test" not in table.metrics and table.lookup(BEST)["bench_cifar10_valid"] == 10.25


def test_api_bad_arch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nats(monkeypatch, FakeAPI([BEST, "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"]))
    archive = tmp_path / "NATS-tss-v1_0-3ffb9.pickle.pbz2"
    archive.write_bytes(b"BZh")
    refused(archive, "arch #1", "'conv~0'")
