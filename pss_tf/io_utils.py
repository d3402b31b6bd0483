"""Writing and fingerprinting files: atomic writes (a crash mid-write never leaves a
half-written file), the permissions new files get, and SHA-256 digests read in chunks."""

from __future__ import annotations

import json
import os
import tempfile


def atomic_write(path: str | os.PathLike, write, mode: str = "w") -> None:
    """Calls `write(file)` on a temporary file beside `path`, then renames it over
    `path`; on any error the temporary file goes and `path` is left as it was."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        share(fd)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def share(target: int | str, directory: bool = False) -> None:
    """Gives a file (a descriptor or path) or a `directory` that mkstemp or mkdtemp made
    private the permissions any new one gets under the umask, so that a server or a
    colleague can read it."""
    mask = os.umask(0)  # The only way to read the umask is to set it.
    os.umask(mask)
    mode = (0o777 if directory else 0o666) & ~mask
    if isinstance(target, int):
        os.fchmod(target, mode)
    else:
        os.chmod(target, mode)


def hash_file(path: str | os.PathLike, digest=None):
    """`digest` (a new SHA-256 by default) updated with the bytes of `path`, read 1 MiB at a time."""
    import hashlib

    digest = hashlib.sha256() if digest is None else digest
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path: str | os.PathLike, data) -> None:
    # Serialise first: an unserialisable value must not touch the file.
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "file"):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {os.fspath(path)}: not valid JSON ({e})") from None


def check_header(data, file_format: str, version: int, required: set[str]) -> None:
    """Checks a versioned JSON document's format, version and top-level fields.

    Raises ValueError (the caller adds which file) so every saved state of pss_tf is
    refused the same way when it comes from another tool or another version.
    """
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("format") != file_format or data.get("version") != version:
        raise ValueError(
            f"not a version {version} {file_format} file (format={data.get('format')!r}, version={data.get('version')!r})"
        )
    missing = set(required) - set(data)
    if missing:
        raise ValueError(f"missing field(s) {sorted(missing)}")


def save_figure(fig, path: str | os.PathLike) -> None:
    """Writes a matplotlib figure as a PNG, atomically, and closes it (even on failure)."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png"), mode="wb")
    finally:
        plt.close(fig)
