"""True accuracies of a derived NAS-Bench-201 cell, looked up in a benchmark table the user supplies.

Nothing is downloaded and no table ships with nasrun (docs/evidence.md). Two sources:

- a CSV file (``kind="csv"``; the format to keep and reuse): a header row, an ``arch`` column holding
  NB201 arch strings (``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``) and one numeric column per metric;
- the official NAS-Bench-201 / NATS-Bench topology file (``kind="nb201_api"``), read once through its
  optional API package (``pip install 'nasrun[nb201]'``). Loading the full official file takes a lot of
  memory (users report about 28 GB for ``NAS-Bench-201-v1_1-096897.pth``); the NATS-Bench ``-simple``
  folder is read one architecture at a time. Convert it once with :func:`export_csv`, then use the CSV.

Either way the table keeps only a dict from the canonical arch string to a row of a float64 array,
and every problem in the file refuses the whole table (a :class:`BenchmarkError` naming the place):
a half-valid table would score some cells and silently not others.
"""

from __future__ import annotations

import csv
import gc
import importlib
import io
import math
import stat
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np

from nasrun.errors import GenotypeError, NasrunError
from nasrun.genotype.genotype import Genotype, parse_nb201
from nasrun.genotype.checks import short
from nasrun.run.files import atomic_write_text

__all__ = ["API_METRICS", "ARCH_COLUMN", "BenchmarkError", "BenchmarkTable", "KINDS", "PREFIX", "check_table_path",
           "export_csv", "load_table"]

ARCH_COLUMN = "arch"
PREFIX = "bench_"
KINDS = ("auto", "csv", "nb201_api")
_LIMIT = 200

#: What the official file gives per architecture: (metric, API dataset, ``get_more_info`` key), at 200 epochs
#: averaged over seeds (as NAS-Bench-201 reports). ``cifar10-valid`` trains on the 25k half (valid = the other half,
#: test = the original test set); ``cifar10`` trains on all 50k (test only, the number papers report);
#: CIFAR-100 and ImageNet16-120 valid/test are the ``x-valid``/``x-test`` halves of their test sets.
API_METRICS: tuple[tuple[str, str, str], ...] = (
    ("cifar10_valid", "cifar10-valid", "valid-accuracy"),
    ("cifar10_valid_test", "cifar10-valid", "test-accuracy"),
    ("cifar10_test", "cifar10", "test-accuracy"),
    ("cifar100_valid", "cifar100", "valid-accuracy"),
    ("cifar100_test", "cifar100", "test-accuracy"),
    ("imagenet16_120_valid", "ImageNet16-120", "valid-accuracy"),
    ("imagenet16_120_test", "ImageNet16-120", "test-accuracy"),
)

#: Import name -> pip name of the API packages: nas_201_api reads the NB201 ``.pth`` files, nats_bench the
#: NATS-Bench topology pickle (``NATS-tss-v1_0-3ffb9.pickle.pbz2``) and its ``-simple`` folder.
_PACKAGES = {"nas_201_api": "nas-bench-201", "nats_bench": "nats_bench"}

_FORMATS = ("a CSV file with an `arch` column (NB201 arch strings) and one numeric column per metric, or the "
            "official NAS-Bench-201 / NATS-Bench topology file read through its API package "
            "(NAS-Bench-201-v1_1-096897.pth, NAS-Bench-201-v1_0-e61699.pth, NATS-tss-v1_0-3ffb9.pickle.pbz2 or the "
            "NATS-tss-v1_0-3ffb9-simple folder)")
_WHERE = ("the official files are distributed by their authors through Google Drive, Baidu, Dropbox and OneDrive "
          "(links in the D-X-Y/NAS-Bench-201 and D-X-Y/NATS-Bench READMEs), not by any package registry; "
          "nasrun downloads nothing")


class BenchmarkError(NasrunError):
    """A benchmark table cannot be read, or a cell cannot be looked up in it."""


def _cut(text: str, limit: int = _LIMIT) -> str:
    """Plain text (a path, a message) cut to one readable piece: paths and file contents may be huge."""
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------ the table
class BenchmarkTable:
    """Metric values per NB201 cell: a dict from the canonical arch string to a row of one float64 array."""

    def __init__(self, path: Path, metrics: list[str], index: dict[str, int], values: np.ndarray,
                 kind: str) -> None:
        self.path = path
        self.metrics = list(metrics)
        self.kind = kind
        self._index = index
        self._values = values

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"BenchmarkTable({_cut(str(self.path))!r}, {len(self)} archs, metrics={self.metrics})"

    @property
    def memory_bytes(self) -> int:
        """An estimate of what the table holds: the array plus the dict, its keys and its row numbers."""
        keys = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in self._index.items())
        return int(self._values.nbytes + sys.getsizeof(self._index) + keys)

    def rows(self) -> Iterator[tuple[str, np.ndarray]]:
        """(arch, values) in table order: what :func:`export_csv` writes."""
        for arch, row in self._index.items():
            yield arch, self._values[row]

    def lookup(self, genotype_or_arch: Union[Genotype, str]) -> dict[str, float]:
        """``{"bench_<metric>": value}`` for a cell given as a genotype or an NB201 arch string."""
        arch = self._key(genotype_or_arch)
        row = self._index.get(arch)
        if row is None:
            raise BenchmarkError(f"benchmark table {_cut(str(self.path))}: arch {short(arch)} is not in the "
                                 f"table ({len(self)} archs)")
        return {PREFIX + m: float(v) for m, v in zip(self.metrics, self._values[row])}

    def _key(self, genotype_or_arch: Any) -> str:
        """The canonical arch string: the table's keys are canonical, so a hit needs no parse."""
        if isinstance(genotype_or_arch, str):
            if genotype_or_arch in self._index:
                return genotype_or_arch
            return canonical_arch(genotype_or_arch, "benchmark lookup")
        if isinstance(genotype_or_arch, Genotype):
            return _genotype_key(genotype_or_arch)
        raise BenchmarkError(f"benchmark lookup: expected a Genotype or an NB201 arch string, got "
                             f"{short(genotype_or_arch)}")


def canonical_arch(text: str, source: str) -> str:
    """The arch string as nasrun writes it (``parse_nb201`` then ``.nb201``), or a BenchmarkError."""
    try:
        return parse_nb201(text, source).nb201  # type: ignore[return-value]
    except GenotypeError as exc:
        raise BenchmarkError(str(exc)) from None


def _genotype_key(genotype: Genotype) -> str:
    """A genotype's arch string; the benchmark scores only one-input, three-node cells of NB201 ops."""
    arch = genotype.nb201
    if arch is not None:
        try:
            return parse_nb201(arch).nb201  # type: ignore[return-value]
        except GenotypeError:
            pass  # the right shape with ops outside NB201's five
    raise BenchmarkError(f"benchmark lookup: the genotype is not an NB201 cell (space={_cut(genotype.space, 60)}, "
                         f"{genotype.inputs} input(s), {genotype.nodes} nodes, ops {_cut(', '.join(genotype.ops))}); "
                         "the NAS-Bench-201 benchmark covers only space=nb201")


def _drop_empty_columns(metrics: list[str], values: np.ndarray, where: Callable[[int], str],
                        path: Path) -> tuple[list[str], np.ndarray]:
    """Drop the columns with no value at all; refuse a column with some values missing.

    A table either knows a metric for every cell or not at all, so a lookup never returns NaN (and an
    exported table loads again).
    """
    missing = np.isnan(values)
    keep = ~missing.all(axis=0)
    partial = missing.any(axis=0) & keep
    if partial.any():
        col = int(np.flatnonzero(partial)[0])
        rows = np.flatnonzero(missing[:, col])
        raise BenchmarkError(f"benchmark table {_cut(str(path))}: {where(int(rows[0]))}, column "
                             f"{short(metrics[col])}: no value ({len(rows)} of {len(values)} rows miss one); "
                             "a metric column must have a value in every row (or be left empty in all)")
    if not keep.any():
        raise BenchmarkError(f"benchmark table {_cut(str(path))}: every metric column is empty "
                             f"({_cut(', '.join(metrics))}); expected numeric values")
    return [m for m, k in zip(metrics, keep) if k], np.ascontiguousarray(values[:, keep])


# ------------------------------------------------------------------------------------- loading
def load_table(path: Union[str, Path], kind: str = "auto") -> BenchmarkTable:
    """Read a benchmark table: ``kind`` "csv", "nb201_api", or "auto" (a ``.csv`` name is CSV, anything
    else, a folder included, is the official file)."""
    if kind not in KINDS:
        raise BenchmarkError(f"benchmark kind {short(kind)}: expected one of {', '.join(KINDS)}")
    path = check_table_path(path, kind)
    if kind == "csv" or (kind == "auto" and path.suffix.lower() == ".csv" and not path.is_dir()):
        return _read_csv(path)
    return _read_api(path, guessed=kind == "auto")


_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_table_path(path: Union[str, Path], kind: str = "auto") -> Path:
    """The table's path, refused before anything opens it unless it is a regular file, or a folder for the
    official NATS-Bench ``-simple`` format: a pipe, a device or a socket would block a reader forever.

    Raises :class:`BenchmarkError` naming ``benchmark.path``; called before a run starts and by :func:`load_table`.
    """
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode  # stat never blocks, not even on a pipe
    except (OSError, ValueError):  # absent, a name the system refuses (too long, NUL byte, ...)
        raise BenchmarkError(missing_file_message(path)) from None
    if stat.S_ISREG(mode):
        return path
    if stat.S_ISDIR(mode):
        if kind == "csv" or (kind == "auto" and path.suffix.lower() == ".csv"):
            raise BenchmarkError(f"benchmark.path={_cut(str(path))}: is a folder, not a CSV file; accepted: {_FORMATS}")
        return path
    what = next((name for test, name in _SPECIAL if test(mode)), "not a file or a folder")
    raise BenchmarkError(f"benchmark.path={_cut(str(path))}: is {what}, not a regular file (reading it could wait "
                         f"forever); accepted: {_FORMATS}")


def missing_file_message(path: Path) -> str:
    """One line for a table that is not there: the path, the formats accepted, where the official files come from."""
    return f"benchmark.path={_cut(str(path))}: no such file or folder; accepted: {_FORMATS}; {_WHERE}"


def _exists(path: Path) -> bool:
    """Whether the path exists; a name the system refuses (too long, ...) counts as absent."""
    try:
        return path.exists()
    except OSError:
        return False


# ---------------------------------------------------------------------------------------- CSV
def _read_csv(path: Path) -> BenchmarkTable:
    """Read a CSV table in one pass (csv module, linear time), refusing it at its first problem."""
    where = f"benchmark table {_cut(str(path))}"
    if path.is_dir():
        raise BenchmarkError(f"{where}: is a folder, not a CSV file; accepted: {_FORMATS}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                return _parse_csv(reader, path, where)
            except csv.Error as exc:
                raise BenchmarkError(f"{where}: line {reader.line_num}: not valid CSV ({_cut(str(exc))})") from None
    except UnicodeDecodeError:
        raise BenchmarkError(f"{where}: not UTF-8 text; for the official binary file use kind=nb201_api; "
                             f"accepted: {_FORMATS}") from None
    except OSError as exc:
        raise BenchmarkError(f"{where}: cannot be read ({_cut(exc.strerror or str(exc))})") from None


def _parse_csv(reader: Any, path: Path, where: str) -> BenchmarkTable:
    header = next(reader, None)
    while header is not None and _blank(header):
        header = next(reader, None)
    if header is None:
        raise BenchmarkError(f"{where}: the file is empty; expected a header row with an `arch` column and "
                             "metric columns, then one row per arch")
    arch_col, metric_cols = _header(header, reader.line_num, where)
    metrics = [header[c].strip() for c in metric_cols]
    index: dict[str, int] = {}
    lines: list[int] = []  # the line of each row, for messages; dropped with the loader
    flat: list[float] = []
    for row in reader:
        if _blank(row):
            continue
        line = reader.line_num
        if len(row) != len(header):
            raise BenchmarkError(f"{where}: line {line}: {len(row)} fields, the header has {len(header)}")
        arch = _row_arch(row[arch_col], line, where)
        if arch in index:
            raise BenchmarkError(f"{where}: line {line}: arch {short(arch)} is already on line "
                                 f"{lines[index[arch]]}; each arch must appear once")
        index[arch] = len(lines)
        lines.append(line)
        flat.extend(_cell(row[c], line, header[c], where) for c in metric_cols)
    if not index:
        raise BenchmarkError(f"{where}: the header has no rows under it; expected one row per arch")
    values = np.asarray(flat, dtype=np.float64).reshape(len(index), len(metrics))
    metrics, values = _drop_empty_columns(metrics, values, lambda r: f"line {lines[r]}", path)
    return BenchmarkTable(path, metrics, index, values, "csv")


def _blank(row: list[str]) -> bool:
    """An empty line or one of only separators (spreadsheet exports end with some): skipped."""
    return all(not cell.strip() for cell in row)


def _header(header: list[str], line: int, where: str) -> tuple[int, list[int]]:
    """The arch column and the metric columns; names are stripped, and must be present and distinct."""
    names = [name.strip() for name in header]
    for col, name in enumerate(names):
        if not name:
            raise BenchmarkError(f"{where}: line {line}: column {col + 1} of the header has no name")
        if names.index(name) != col:
            raise BenchmarkError(f"{where}: line {line}: column name {short(name)} appears twice")
    if ARCH_COLUMN not in names:
        hint = " (the first row must be the header)" if names[0].startswith("|") else ""
        raise BenchmarkError(f"{where}: line {line}: no `{ARCH_COLUMN}` column{hint}; found columns "
                             f"{short(names)}; expected an `arch` column of NB201 arch strings and metric columns")
    arch_col = names.index(ARCH_COLUMN)
    metric_cols = [c for c in range(len(names)) if c != arch_col]
    if not metric_cols:
        raise BenchmarkError(f"{where}: line {line}: no metric column; expected one numeric column per metric "
                             "besides `arch` (e.g. cifar10_test)")
    return arch_col, metric_cols


def _row_arch(text: str, line: int, where: str) -> str:
    """A row's arch, canonical; a string that is not an NB201 cell refuses the table."""
    try:
        return parse_nb201(text, "").nb201  # type: ignore[return-value]
    except GenotypeError as exc:
        shown = short(text)
        reason = str(exc).removeprefix(": ").removeprefix(f"{shown}: ")  # the value is named once, below
        raise BenchmarkError(f"{where}: line {line}: arch {shown} is not an NB201 cell: {reason}") from None


def _cell(text: str, line: int, column: str, where: str) -> float:
    """A metric value: a finite number, or NaN for an empty cell (allowed only if the whole column is)."""
    text = text.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BenchmarkError(f"{where}: line {line}, column {short(column.strip())}: {short(text)} is not a "
                             "finite number")
    return value


# ------------------------------------------------------------------------------- official file
def _read_api(path: Path, guessed: bool) -> BenchmarkTable:
    """Read every architecture's metrics through the API package, keep the arrays, drop the API object.

    The whole official file is loaded by the package (about 28 GB for NAS-Bench-201-v1_1); only the
    seven 200-epoch columns of :data:`API_METRICS` are kept (under 1 MB for 15,625 cells).
    """
    api, fast = _open_api(path, guessed)
    try:
        index, values = _collect(api, fast, path)
    finally:
        del api
        gc.collect()
    metrics, values = _drop_empty_columns([m for m, _, _ in API_METRICS], values,
                                          lambda r: f"arch {short(list(index)[r])}", path)
    return BenchmarkTable(path, metrics, index, values, "nb201_api")


def _package_for(path: Path) -> str:
    """nas_201_api for the NB201 ``.pth`` files; nats_bench for the NATS-Bench pickle and folder."""
    return "nas_201_api" if path.suffix.lower() == ".pth" and not path.is_dir() else "nats_bench"


def _import_api(path: Path, guessed: bool) -> Any:
    """The API package, imported only now: it is an optional dependency."""
    package = _package_for(path)
    try:
        return importlib.import_module(package)
    except ImportError:
        why = (f"{_cut(str(path))} is not a .csv file, so it is read as the official NAS-Bench-201 / NATS-Bench "
               "file, which" if guessed else f"benchmark table {_cut(str(path))}: the official file")
        raise BenchmarkError(f"{why} needs the package {package} (pip name {_PACKAGES[package]}), which is not "
                             f"installed: pip install 'nasrun[nb201]'; for a CSV table use the .csv extension or "
                             "kind=csv") from None


def _open_api(path: Path, guessed: bool) -> tuple[Any, bool]:
    """The API object over the file and whether it loads one architecture at a time (a NATS folder)."""
    module = _import_api(path, guessed)
    fast = path.is_dir()
    try:
        if module.__name__ == "nas_201_api":
            return module.NASBench201API(str(path), verbose=False), False
        return module.create(str(path), "topology", fast_mode=fast, verbose=False), fast
    except Exception as exc:  # the API's asserts, pickle, torch.load and MemoryError all end here
        raise BenchmarkError(f"benchmark table {_cut(str(path))}: {module.__name__} cannot read it "
                             f"({type(exc).__name__}: {_cut(str(exc))}); loading the whole official file needs "
                             "about 28 GB of memory (the NATS-tss-v1_0-3ffb9-simple folder loads one arch at a "
                             "time)") from None


def _collect(api: Any, fast: bool, path: Path) -> tuple[dict[str, int], np.ndarray]:
    """Every architecture's :data:`API_METRICS` (NaN where the file has none), rows in the API's order."""
    datasets = list(dict.fromkeys(d for _, d, _ in API_METRICS))
    values = np.full((len(api), len(API_METRICS)), np.nan)
    index: dict[str, int] = {}
    for i in range(len(values)):
        arch = canonical_arch(api.arch(i), f"benchmark table {_cut(str(path))}: arch #{i}")
        if arch in index:
            raise BenchmarkError(f"benchmark table {_cut(str(path))}: arch {short(arch)} is #{index[arch]} and "
                                 f"#{i}")
        index[arch] = i
        for dataset in datasets:
            info = _api_info(api, i, dataset, path)
            for col, (_, d, key) in enumerate(API_METRICS):
                if d == dataset and info.get(key) is not None:
                    values[i, col] = float(info[key])
        if fast:  # fast mode caches each arch it reads: drop it to keep memory flat
            getattr(api, "arch2infos_dict", {}).pop(i, None)
    return index, values


def _api_info(api: Any, i: int, dataset: str, path: Path) -> dict[str, Any]:
    """200-epoch metrics of arch ``i`` averaged over its seeds (``is_random=False``, as NAS-Bench-201 reports)."""
    try:
        return api.get_more_info(i, dataset, hp="200", is_random=False)
    except Exception as exc:  # a version without 200-epoch results, an older API signature, ...
        raise BenchmarkError(f"benchmark table {_cut(str(path))}: arch #{i}, {dataset}: the API gives no 200-epoch "
                             f"results ({type(exc).__name__}: {_cut(str(exc))})") from None


# ------------------------------------------------------------------------------------ exporting
def export_csv(table: BenchmarkTable, path: Union[str, Path]) -> Path:
    """Write the table as a CSV that :func:`load_table` reads back exactly: convert the official file once,
    then use the small CSV (values written as the shortest strings that round-trip)."""
    path = Path(path).expanduser()
    if _exists(path) and _exists(table.path) and path.resolve() == table.path.resolve():
        raise BenchmarkError(f"export_csv: {_cut(str(path))} is the table's own source file; choose another path")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([ARCH_COLUMN, *table.metrics])
    for arch, row in table.rows():
        writer.writerow([arch, *(repr(float(v)) for v in row)])
    atomic_write_text(path, buffer.getvalue())
    return path

