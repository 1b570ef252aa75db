"""Where a run's files live: a local path or an object-store URL (gs://...), through one
abstraction, etils `epath`, the layer Orbax and TFDS use for the same URLs.

Object stores have no rename and no append. One object is written in one request, which is
atomic: readers see the old object or the new one. A local file is written beside its target
and renamed over it, for the same guarantee. Directories are never renamed into place;
whoever writes one marks it complete with a last object, which readers check.

Some readers only take local files (SentencePiece, array_record, safetensors' mmap): they get
a local copy of a remote file or directory (`local_copy`), downloaded once per process.

`STORAGE_EMULATOR_HOST`, which google-cloud-storage and gcsfs read, also points tensorstore
(Orbax's array storage) at the same emulator: importing this module derives tensorstore's
`TENSORSTORE_GCS_HTTP_URL` from it, so one variable redirects a whole run.
"""

from __future__ import annotations

import atexit
import contextlib
import glob as local_glob
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator

from etils import epath

from lmscale.errors import InputError


def _point_tensorstore_at_emulator() -> None:
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        return
    if "TENSORSTORE_GCS_HTTP_URL" not in os.environ:
        os.environ["TENSORSTORE_GCS_HTTP_URL"] = host if "://" in host else f"http://{host}"
    # An emulator needs no credentials; gcsfs would warn on every call that it found none.
    logging.getLogger("gcsfs").setLevel(logging.ERROR)


_point_tensorstore_at_emulator()

GLOB_CHARS = "*?["


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
    """A path object for either kind; local paths are user-expanded, not made absolute."""
    path = os.fspath(path)
    return epath.Path(path if is_remote(path) else os.path.expanduser(path))


def join(base: str | os.PathLike, *parts: str) -> str:
    return os.fspath(as_path(base).joinpath(*parts))


def absolute(path: str | os.PathLike) -> str:
    """Local paths made absolute (Orbax wants them so); URLs as they are."""
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def exists(path: str | os.PathLike) -> bool:
    return as_path(path).exists()


def isfile(path: str | os.PathLike) -> bool:
    return as_path(path).is_file()


def isdir(path: str | os.PathLike) -> bool:
    return as_path(path).is_dir()


def makedirs(path: str | os.PathLike) -> None:
    as_path(path).mkdir(parents=True, exist_ok=True)


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return as_path(path).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {os.fspath(path)!r}: {_reason(err)}") from err


def read_text(path: str | os.PathLike) -> str:
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{os.fspath(path)!r} is not valid UTF-8 (byte {err.start}): convert it, e.g. "
            f"'iconv -f latin1 -t utf-8 {os.fspath(path)}'") from err


def open_text(path: str | os.PathLike) -> io.StringIO:
    """A UTF-8 file's text as a stream, local or remote, that fails as `open()` does
    (FileNotFoundError, UnicodeDecodeError) and keeps line endings as `newline=""` does
    (what `csv` wants): epath's remote `open` takes no `newline`."""
    return io.StringIO(as_path(path).read_bytes().decode("utf-8"), newline="")


def read_json(path: str | os.PathLike):
    return json.loads(read_text(path))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """All of `data` or nothing at `path`, for either kind of storage."""
    target = as_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(path):
        target.write_bytes(data)
        return
    fd, tmp = tempfile.mkstemp(dir=os.fspath(target.parent), prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value, indent: int | None = 2) -> None:
    write_text(path, json.dumps(value, indent=indent))


def size(path: str | os.PathLike) -> int:
    return int(as_path(path).stat().length)


def mtime(path: str | os.PathLike) -> float:
    return float(as_path(path).stat().mtime)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a local or remote pattern (remote: `*`, `?`, `[...]` in any
    component but the bucket; `**` is refused by epath, as one RPC per directory)."""
    if not is_remote(pattern):
        return sorted(local_glob.glob(os.path.expanduser(pattern)))
    scheme, rest = pattern.split("://", 1)
    parts = rest.split("/")
    first = next((i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARS)),
                 None)
    if first is None:
        return [pattern] if exists(pattern) else []
    if first == 0:
        raise InputError(f"{pattern!r}: a bucket name cannot be a glob")
    base = epath.Path(f"{scheme}://" + "/".join(parts[:first]))
    return sorted(os.fspath(p) for p in base.glob("/".join(parts[first:])))


def files_under(directory: str | os.PathLike) -> Iterator[str]:
    """Every file below `directory`, as paths relative to it, in sorted order."""
    root = as_path(directory)

    def walk(folder: epath.Path, prefix: str) -> Iterator[str]:
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if entry.is_dir():
                yield from walk(entry, f"{prefix}{entry.name}/")
            else:
                yield prefix + entry.name
    yield from walk(root, "")


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Streams one file between any two kinds of storage."""
    destination = as_path(target)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with as_path(source).open("rb") as src, destination.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)


def copy_tree(source: str | os.PathLike, target: str | os.PathLike,
              last: tuple[str, ...] = ()) -> None:
    """Copies every file under `source` to `target`; the relative paths in `last` go after
    all others, so a reader that checks for them sees a complete directory."""
    names = list(files_under(source))
    for name in sorted(names, key=lambda n: n in last):
        copy_file(join(source, name), join(target, name))


_DOWNLOADS: dict[str, str] = {}


def local_copy(path: str | os.PathLike) -> str:
    """`path` itself when local; else a local copy of the remote file or directory, made
    once per process in a temporary directory removed at exit."""
    path = os.fspath(path)
    if not is_remote(path):
        return path
    if path not in _DOWNLOADS:
        folder = tempfile.mkdtemp(prefix="lmscale-download-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        target = os.path.join(folder, as_path(path).name)
        if isdir(path):
            copy_tree(path, target)
        elif isfile(path):
            copy_file(path, target)
        else:
            raise InputError(f"{path!r} does not exist")
        _DOWNLOADS[path] = target
    return _DOWNLOADS[path]


def mirror_to_local(remote_dir: str, local_dir: str) -> None:
    """Downloads a complete remote directory to `local_dir` unless it is there already
    (callers key `local_dir` by content, e.g. a fingerprint); the download lands beside it
    and is renamed into place, so a local copy that exists is whole."""
    if os.path.isdir(local_dir):
        return
    os.makedirs(os.path.dirname(local_dir), exist_ok=True)
    staging = tempfile.mkdtemp(dir=os.path.dirname(local_dir),
                               prefix=f".{os.path.basename(local_dir)}.")
    try:
        copy_tree(remote_dir, staging)
        os.replace(staging, local_dir)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not os.path.isdir(local_dir):  # not another process that got there first
            raise


@contextlib.contextmanager
def local_output_dir(out_dir: str) -> Iterator[str]:
    """A local folder for writers that only write local files: `out_dir` itself when
    local, else a temporary folder whose files are uploaded to `out_dir` when the block
    ends without an error."""
    if not is_remote(out_dir):
        os.makedirs(out_dir, exist_ok=True)
        yield out_dir
        return
    with tempfile.TemporaryDirectory(prefix="lmscale-output-") as folder:
        yield folder
        copy_tree(folder, out_dir)


def cache_dir(*parts: str) -> str:
    """A local folder for copies of remote data: $LMSCALE_CACHE or ~/.cache/lmscale."""
    root = os.environ.get("LMSCALE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "lmscale")
    return os.path.join(root, *parts)


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__
