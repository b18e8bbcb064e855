"""Output folders that never destroy anything: checked before work starts, written whole or not at all.

Every folder synq_hf writes (``save_pretrained``, ``quantize``, ``synthesize``, ``demo``, exports) goes through
:func:`check_output` (before any work: refuses what must not be replaced, checks writability) and
:func:`write_output` (assembles the folder in a temporary sibling on the same filesystem, then renames it
into place). ``overwrite`` replaces only a folder that synq_hf wrote: one carrying a synq_hf signature and
holding nothing but the files synq_hf writes (:data:`OUTPUT_PATTERNS`). The current directory, its parents
and the home directory are never replaced.

A new kind of output (e.g. an export) calls ``check_output`` first and ``write_output`` last; if it writes new
file names, add their patterns to ``OUTPUT_PATTERNS`` so that ``--overwrite`` recognizes them later.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError, SynQError
from ..sources.folders import is_synq_config

__all__ = [
    "OUTPUT_PATTERNS", "OutputError", "check_output", "check_output_file", "is_local_name", "is_synq_output", "make_shareable",
    "output_error", "public_name", "write_file", "write_output",
]

OUTPUT_PATTERNS: tuple[str, ...] = (
    # quantized model folders (save_pretrained / quantize / demo)
    "README.md", "card.json", "config.json", "results.json", "preprocessor_config.json", "*.safetensors", "*.onnx",
    "*.onnx.data",
    # synthetic datasets (datasets' save_to_disk)
    "dataset_info.json", "state.json", "dataset_dict.json", "data-*-of-*.arrow", "*.arrow",
)
"""Names a synq_hf output folder may hold; anything else makes ``--overwrite`` refuse to replace it."""

_PARTIAL = ".partial-"


class OutputError(ConfigError):
    """An output folder cannot be written or must not be replaced."""


def _signature(folder: Path) -> bool:
    """Whether ``folder`` carries a synq_hf signature (a synq ``config.json`` or a synq synthetic dataset)."""
    for name, check in (("config.json", is_synq_config), ("dataset_info.json", _synq_dataset)):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and check(data):
            return True
    return False


def _synq_dataset(data: dict) -> bool:
    try:
        meta = json.loads(data.get("description") or "{}")
    except (TypeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == "synq_hf.synthesize"


def _foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` that synq_hf does not write (sub-folders always count as foreign)."""
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() or not any(fnmatch.fnmatchcase(entry.name, p) for p in OUTPUT_PATTERNS):
            out.append(entry.name + ("/" if entry.is_dir() else ""))
    return out


def is_synq_output(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a folder synq_hf wrote (signature present, nothing else in it)."""
    path = Path(folder)
    return path.is_dir() and _signature(path) and not _foreign_entries(path)


def _protected(path: Path) -> str | None:
    """Why ``path`` (resolved) may never be replaced, or None."""
    cwd = Path.cwd().resolve()
    if path == cwd:
        return "is the current directory"
    if path in cwd.parents:
        return "is a parent of the current directory"
    home = Path.home().resolve()
    if path == home:
        return "is your home directory"
    if path == Path(path.anchor):
        return "is the filesystem root"
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(out: str | os.PathLike, *, overwrite: bool = False, flag: str = "--out",
                 create_parents: bool = True) -> Path:
    """Refuse, before any work, an output that cannot be written or must not be replaced; returns the path.

    Refused: the current directory, its parents, the home directory, a file, a non-empty folder without
    ``overwrite``, and (even with ``overwrite``) a folder holding anything synq_hf did not write. The nearest
    existing parent must accept a new folder (probed by creating and removing one). With ``create_parents=False``
    (the command line) a missing parent folder is refused too, never created silently.
    """
    path = Path(out).expanduser()
    resolved = path.resolve()
    name = f"{flag} {out}".strip()
    if not create_parents and not path.parent.exists():
        raise OutputError(f"{name}: the folder {path.parent} does not exist; create it first (mkdir -p {path.parent})")
    why = _protected(resolved)
    if why is not None:
        raise OutputError(f"{name} {why}; synq_hf writes a new folder: name one, e.g. {flag or 'save_dir='} my-model")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{name} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise OutputError(f"{name} exists and is not empty; pass --overwrite (overwrite=True) to replace it")
        if not _signature(path):
            raise OutputError(f"{name} was not written by synq_hf (no synq config.json or synthetic "
                              "dataset_info.json); refusing to replace it even with --overwrite")
        foreign = _foreign_entries(path)
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise OutputError(f"{name} holds files synq_hf did not write ({shown}); refusing to replace it "
                              "even with --overwrite: move them or choose another folder")
        if not os.access(path, os.W_OK | os.X_OK):  # replacing a folder moves it: that needs write access to it
            raise OutputError(f"cannot write {name}: permission denied (the folder is not writable)")
    parent = _nearest_existing(resolved.parent)
    if not parent.is_dir():
        raise OutputError(f"cannot write {name}: {parent} is not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=f".{path.name}{_PARTIAL}", dir=parent)
        os.rmdir(probe)
    except OSError as e:
        raise OutputError(f"cannot write {name}: {e.strerror or e} ({parent})") from None
    return path


def check_output_file(out: str | os.PathLike, *, overwrite: bool = False, flag: str = "--out",
                      ours: Callable[[Path], bool] | None = None, kind: str = "a file") -> Path:
    """:func:`check_output` for one file (an export): refuse, before any work, what must not be replaced.

    Refused: a folder; a missing parent folder (never created silently); an existing file without ``overwrite``,
    and with it one that ``ours(path)`` does not recognise as an earlier synq_hf output; a parent folder that does
    not accept a new file (probed by creating and removing one).
    """
    path = Path(out).expanduser()
    name = f"{flag} {out}".strip()
    if path.is_dir():
        raise OutputError(f"{name} is a folder; give a file name, e.g. {flag or 'out='} model.onnx")
    parent = path.parent
    if not parent.exists():
        raise OutputError(f"{name}: the folder {parent} does not exist; create it first (mkdir -p {parent})")
    if not parent.is_dir():
        raise OutputError(f"cannot write {name}: {parent} is not a folder")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputError(f"{name} exists; pass --overwrite to replace it")
        if ours is not None and not ours(path):
            raise OutputError(f"{name} is not {kind} written by synq_hf; refusing to replace it even with "
                              "--overwrite: move it or choose another name")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write {name}: {e.strerror or e} ({parent})") from None
    return path


def make_shareable(folder: str | os.PathLike) -> None:
    """Give ``folder`` and everything in it the permissions of ordinary tool output (umask-respecting 0o777/0o666)."""
    umask = os.umask(0)
    os.umask(umask)
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            p = os.path.join(root, name)
            mode = os.stat(p).st_mode
            os.chmod(p, (0o777 if mode & stat.S_IXUSR else 0o666) & ~umask)


def write_output(out: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False,
                 flag: str = "--out") -> Path:
    """Run ``write(tmp)`` on a temporary sibling of ``out``, then move it into place; returns ``out``.

    ``out`` is checked again (:func:`check_output`); a failure or interruption removes the temporary folder
    and leaves any existing ``out`` untouched. With ``overwrite`` an earlier synq_hf output is replaced.
    """
    path = check_output(out, overwrite=overwrite, flag=flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{_PARTIAL}", dir=path.parent))
    old: Path | None = None
    try:
        write(tmp)
        make_shareable(tmp)
        if path.exists():
            if any(path.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, old / path.name)
            else:
                path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists() and (old / path.name).exists():
            os.replace(old / path.name, path)  # put the earlier output back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path


def write_file(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it into place; returns ``path``.

    Readers see the old file or the whole new one, never a partial one; a failure removes the temporary file.
    The file gets the permissions of ordinary tool output (umask-respecting 0o666).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def output_error(out: str | os.PathLike, e: OSError, flag: str = "--out") -> SynQError:
    """One line for an ``OSError`` while writing ``out``."""
    return OutputError(f"cannot write {f'{flag} {out}'.strip()}: {e.strerror or e}")


def is_local_name(name: str) -> bool:
    """Whether a model or data id names a local path (``local-dir:``, absolute, relative or existing)."""
    name = str(name)
    if name.startswith(("local-dir:", "file://", "parquet:")) or name.lower().endswith(".parquet"):
        return True
    name = name.removeprefix("parquet:")
    return os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name)


def public_name(name: str) -> str:
    """A model or data id safe to write anywhere: a local path becomes its last component (never a path)."""
    if not is_local_name(name):
        return str(name)
    raw = str(name).removeprefix("local-dir:").removeprefix("file://").removeprefix("parquet:")
    return Path(os.path.normpath(os.path.expanduser(raw))).name or "local"
