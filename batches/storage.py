"""
File bytes on disk, one file per id under `BATCHES__FILES_DIR` (blocking: call from a thread).

A file is written under a temporary name and renamed into place, so a reader never sees half
of one and a crash leaves only a `.part` to sweep.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from django.conf import settings

CHUNK_BYTES = 64 * 1024
_FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")


def files_dir() -> Path:
    directory = Path(settings.BATCHES["files_dir"])
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def path_of(file_id: str) -> Path:
    # Ids are made by the gateway; checked anyway, so no id can name a path outside the folder.
    if not _FILE_ID.match(file_id):
        raise ValueError(f"not a file id: {file_id!r}")
    return files_dir() / file_id


def save_stream(file_id: str, source: IO[bytes]) -> int:
    """Copy an uploaded file into place; returns its size."""
    target = path_of(file_id)
    part = target.with_suffix(".part")
    with part.open("wb") as out:
        shutil.copyfileobj(source, out, CHUNK_BYTES)
        size = out.tell()
    os.replace(part, target)
    return size


def save_lines(file_id: str, lines: Iterable[bytes]) -> int:
    """Write a JSONL file from its lines (each without its newline); returns its size."""
    target = path_of(file_id)
    part = target.with_suffix(".part")
    with part.open("wb") as out:
        for line in lines:
            out.write(line)
            out.write(b"\n")
        size = out.tell()
    os.replace(part, target)
    return size


def open_file(file_id: str) -> IO[bytes]:
    return path_of(file_id).open("rb")


def read_chunks(source: IO[bytes]) -> Iterator[bytes]:
    """An open file's bytes, chunk by chunk; the file is closed at the end (or on close)."""
    with source:
        while chunk := source.read(CHUNK_BYTES):
            yield chunk


def delete(file_id: str) -> None:
    path_of(file_id).unlink(missing_ok=True)


def remove_stale_parts(*, older_than: float) -> int:
    """Delete the `.part` files a crash left, untouched for `older_than` seconds; how many."""
    removed = 0
    cutoff = time.time() - older_than
    directory = Path(settings.BATCHES["files_dir"])
    if not directory.is_dir():  # nothing stored yet (and no folder made for nothing)
        return 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if not (entry.name.endswith(".part") and _FILE_ID.match(entry.name[:-5])):
                continue
            with contextlib.suppress(FileNotFoundError):  # another process took it
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed
