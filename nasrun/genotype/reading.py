"""Reading a genotype file: its bytes to a JSON value, refusing what no genotype file is (a folder, a pipe, a
huge or empty file, text that is not UTF-8, JSON too deeply nested), every problem one GenotypeError naming
the file; never eval, never pickle. The fields are checked in :mod:`nasrun.genotype.checks`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from nasrun.errors import GenotypeError
from nasrun.genotype.checks import KEYS_V1, MAX_FILE_BYTES, MAX_NODES, MAX_OPS, parse_int, short


def read_text(path: Path) -> str:
    """The file's text, refusing what no genotype is: folders, pipes, huge files, non-UTF-8, empty."""
    try:
        if not path.exists():
            raise GenotypeError(f"{path}: no such file")
        if path.is_dir():
            raise GenotypeError(f"{path}: is a folder, expected a genotype.json file")
        if not path.is_file():
            raise GenotypeError(f"{path}: not a regular file (a pipe or a device?), expected a genotype.json file")
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise GenotypeError(f"{path}: cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise GenotypeError(
            f"{path}: larger than {MAX_FILE_BYTES} bytes; a genotype.json is a few kilobytes "
            f"(at most {MAX_NODES} nodes and {MAX_OPS} ops)"
        )
    try:
        text = raw.decode("utf-8-sig")  # tolerate the byte-order mark some editors add
    except UnicodeDecodeError as e:
        raise GenotypeError(f"{path}: not a text (UTF-8) file: {e.reason} at byte {e.start}") from None
    if not text.strip():
        raise GenotypeError(f"{path}: the file is empty; expected a JSON object with keys {', '.join(KEYS_V1)}")
    return text


def parse_json(text: str, path: Path) -> Any:
    """JSON only (never eval or pickle); long integers stay unconverted, deep nesting is reported."""
    try:
        return json.loads(text, parse_int=parse_int)
    except json.JSONDecodeError as e:
        msg = e.msg.removesuffix(" at")  # "Unterminated string starting at" + " at line ..."
        raise GenotypeError(f"{path}: not valid JSON: {msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise GenotypeError(
            f"{path}: {_deepest_field(text)}: nested too deeply; a genotype needs 3 levels "
            "(the object, a list of pairs, an [op, input] pair)"
        ) from None
    except ValueError as e:  # any other number the parser refuses
        raise GenotypeError(f"{path}: not valid JSON: {short(str(e))}") from None


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:,]')


def _deepest_field(text: str) -> str:
    """The field (``key`` or ``key[i]``) holding the deepest nesting, found by one linear scan.

    Used only after the JSON parser gave up on the depth, so the message can still name the field.
    """
    depth = deepest = index = 0
    key, last, where = None, None, "the top-level value"
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok in ("[", "{"):
            depth += 1
            index = 0 if depth == 2 else index
            if depth > deepest:
                deepest = depth
                where = where if key is None else (key if depth == 2 else f"{key}[{index}]")
        elif tok in ("]", "}"):
            depth -= 1
        elif tok == ",":
            index += depth == 2
        elif tok == ":":
            key = last[1:-1][:60] if depth == 1 and last else key
        else:
            last = tok
    return where
