"""Temporary files beside their destination, created with the permissions the user expects.

``tempfile.mkstemp`` always creates files readable by their owner only (mode 0600); a file
moved into place from it would keep that mode, unlike every other file the user creates.
Creating it with ``os.open(..., 0o666)`` lets the kernel apply the process's umask instead,
with no need to read the umask (which can only be read by changing it).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_temp_beside(dest: Path, suffix: str) -> tuple[int, Path]:
    """Create and open ``.<dest name>.<random><suffix>`` in ``dest``'s folder; returns ``(fd, path)``.

    The folder must exist. The caller closes the descriptor and renames or removes the file.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = dest.parent / f".{dest.name}.{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {dest}")
