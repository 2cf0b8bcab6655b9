"""Opening data files: a reader opens only regular files.

Opening a named pipe waits for a writer, forever if none comes, and a device or a socket is no data
file either; every reader of dataset files goes through :func:`open_regular`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO


def open_regular(path: str | Path) -> BinaryIO:
    """Open a file for binary reading only if it is a regular file (OSError otherwise).

    Opening a named pipe waits for a writer, forever if none comes; a device or a socket is no data
    file either. The file is opened without waiting and checked before anything reads it.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file (a pipe, a device or a socket)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
