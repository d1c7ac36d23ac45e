"""Crash-safe writes: every file huvi writes goes to a temporary name beside it, then is renamed.

A reader therefore sees either the old file or the complete new one, never half of either. The
file's data is fsynced before the rename and its folder after it, so a power cut cannot leave the
rename unrecorded or the new name pointing at unwritten data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

import torch
from safetensors.torch import save_file

_START_UMASK = os.umask(0)  # the portable way to read the umask is to set it: once, at import
os.umask(_START_UMASK)


def _umask() -> int:
    """The process's umask now (Linux reports it in /proc without changing it; elsewhere the one at import)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _START_UMASK


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary path in `path`'s folder, fsync it, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the real suffix: writers such as ffmpeg pick the format from it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # After the write: mkstemp makes the file private (0600), and some writers (safetensors'
        # save_file) replace the file with a private one of their own. Give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make the renames in `folder` durable (POSIX; a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` atomically. Tensors that share memory (bitsandbytes gives every parameter's
    state the same quantization map) are each written as a copy of their own: safetensors refuses
    shared storage."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        value = value.detach().contiguous().cpu()
        storage = value.untyped_storage().data_ptr()
        out[key] = value.clone() if storage in seen else value
        seen.add(storage)
    tensors = out
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def publish_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Rename a fully written folder into place (replacing an older one of the same name)."""
    if final_dir.exists():
        shutil.rmtree(final_dir)
    fsync_dir(tmp_dir)  # the files' names inside it (each file's data was fsynced when written)
    os.replace(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) while the block runs, so that processes
    sharing a folder take turns; without flock (Windows) the block runs unguarded."""
    if fcntl is None:
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
