"""Reading checkpoints safely, and writing effnet's own format.

Checkpoints are untrusted input. PyTorch ``.pth`` files are pickles; they are read with
``torch.load(weights_only=True)``, whose unpickler only rebuilds tensors and plain containers
and refuses anything that could run code. effnet itself writes only safetensors (weights)
with JSON metadata in the safetensors header.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import pickle
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from effnet._files import create_temp_beside
from effnet.errors import EffnetError

EFFNET_FORMAT = "effnet"
# 2: the architecture records its layout block by block (1: only the scaling config; still read).
FORMAT_VERSION = 2

# Training checkpoints wrap the weights; these are the keys that hold them, best first.
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "net", "weights")


@dataclass
class Checkpoint:
    """Tensors keyed by name, plus whatever metadata travelled with them."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str = ""


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_len < 100_000_000


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load the tensors of a ``.pth``/``.pt``/``.bin``/``.safetensors`` or Keras file without running code.

    Wrapped training checkpoints (``{"state_dict": ...}``, ``{"model": ...}``, EMA weights)
    and DistributedDataParallel's ``module.`` prefixes are unwrapped. Keras ``.keras``,
    ``.weights.h5`` and legacy ``.h5`` files are read by :mod:`effnet.weights.keras`.
    """
    p = Path(path)
    if not p.exists():
        raise EffnetError(f"checkpoint {p} does not exist")
    if p.is_dir():
        raise EffnetError(f"checkpoint {p} is a directory; pass the weight file inside it")
    if p.stat().st_size == 0:
        raise EffnetError(f"checkpoint {p} is empty (0 bytes); download or copy it again")
    if p.suffix.lower() == ".onnx":
        source = _onnx_source(p)
        where = f"it was exported from {source}" if source else "pass the checkpoint it was exported from"
        raise EffnetError(
            f"{p} is an ONNX file, not a PyTorch checkpoint: effnet predict and effnet bench run it; "
            f"for everything else {where}"
        )
    if _is_safetensors(p):
        return _read_safetensors(p)
    from effnet.weights.keras import is_keras_file, read_keras  # it builds on this module

    if is_keras_file(p):
        return read_keras(p)
    return _read_torch(p)


def _onnx_source(path: Path) -> str | None:
    """The weights an effnet ONNX export records it came from (a checkpoint path or a weight name), if readable."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        entry = next((e.value for e in model.metadata_props if e.key == "effnet"), "{}")
        source = json.loads(entry).get("weights")
    except Exception:  # noqa: BLE001 - only a hint for an error message; any failure means "not recorded"
        return None
    return source if isinstance(source, str) and 0 < len(source) <= 500 and "\n" not in source else None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """effnet's metadata of a safetensors file without reading its tensors ({} for anything else)."""
    p = Path(path)
    try:
        if not p.is_file() or not _is_safetensors(p):
            return {}
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            raw = (fh.metadata() or {}).get("effnet")
        metadata = json.loads(raw) if raw else {}
        return metadata if isinstance(metadata, dict) else {}
    except (SafetensorError, OSError, ValueError):
        return {}  # read_checkpoint will report the problem properly


def _read_safetensors(p: Path) -> Checkpoint:
    try:
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            raw_meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise EffnetError(
            f"checkpoint {p} is corrupt or truncated ({_short(exc)}); download or copy it again"
        ) from None
    metadata: dict[str, Any] = {}
    if "effnet" in raw_meta:
        try:
            metadata = json.loads(raw_meta["effnet"])
        except json.JSONDecodeError:
            metadata = None
        if not isinstance(metadata, dict):
            raise EffnetError(f"checkpoint {p} has unreadable effnet metadata; it was not written by effnet")
    else:
        metadata = {k: v for k, v in raw_meta.items()}
    if metadata.get("sparse"):
        tensors = _decode_sparse(tensors, metadata["sparse"], p)
    return Checkpoint(tensors=tensors, metadata=metadata, path=str(p))


# Sparse storage: a mostly-zero tensor is written as a bit mask (one bit per element, packed)
# plus its non-zero values, which is what makes an unstructured-pruned model smaller on disk.
_MASK, _VALUES = ".__mask__", ".__values__"
SPARSE_MIN_ZEROS = 0.25  # below this share of zeros a dense tensor is smaller or about as small
_MAX_ELEMENTS = 2**31


def _encode_sparse(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    out: dict[str, torch.Tensor] = {}
    index: dict[str, Any] = {}
    for name, tensor in tensors.items():
        zeros = int((tensor == 0).sum()) if tensor.is_floating_point() and tensor.numel() >= 256 else 0
        if zeros < SPARSE_MIN_ZEROS * max(tensor.numel(), 1):
            out[name] = tensor
            continue
        flat = tensor.flatten()
        keep = flat != 0
        out[name + _MASK] = torch.from_numpy(np.packbits(keep.numpy()))
        out[name + _VALUES] = flat[keep].clone()
        index[name] = list(tensor.shape)
    return out, index


def _decode_sparse(tensors: dict[str, torch.Tensor], index: Any, p: Path) -> dict[str, torch.Tensor]:
    """Dense tensors again; the index comes from an untrusted file, so every size is checked."""
    bad = f"checkpoint {p} has malformed sparse tensors; it was not written by effnet"
    if not isinstance(index, dict):
        raise EffnetError(bad)
    out = {k: v for k, v in tensors.items() if not k.endswith((_MASK, _VALUES))}
    for name, shape in index.items():
        mask, values = tensors.get(name + _MASK), tensors.get(name + _VALUES)
        if (
            mask is None
            or values is None
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d for d in shape)
            or math.prod(shape) > _MAX_ELEMENTS
            or mask.dtype != torch.uint8
            or mask.dim() != 1
            or values.dim() != 1
            or mask.numel() != (math.prod(shape) + 7) // 8
        ):
            raise EffnetError(bad)
        keep = torch.from_numpy(np.unpackbits(mask.numpy(), count=math.prod(shape)).astype(bool))
        if int(keep.sum()) != values.numel():
            raise EffnetError(bad)
        dense = torch.zeros(math.prod(shape), dtype=values.dtype)
        dense[keep] = values
        out[name] = dense.reshape(shape)
    return out


def _read_torch(p: Path) -> Checkpoint:
    try:
        # argparse.Namespace is how timm's training script stores its arguments: plain data.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "global" in msg.lower():  # the weights-only unpickler refused to import a callable
            raise EffnetError(
                f"refused to load {p}: it contains Python objects other than tensors, and unpickling "
                "them could run arbitrary code; save a plain state_dict or safetensors file instead"
            ) from None
        detail = msg.split("WeightsUnpickler error:", 1)[-1]
        raise EffnetError(
            f"checkpoint {p} is corrupt or not a PyTorch checkpoint ({_short(detail)}); it may also hold Python "
            "objects that effnet refuses to unpickle; save a plain state_dict or safetensors file"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch.load meets corrupt bytes with almost any exception type
        raise EffnetError(
            f"checkpoint {p} is corrupt or truncated ({type(exc).__name__}: {_short(exc)}); download or copy it again"
        ) from None
    metadata: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for key in ("arch", "model_name", "architecture"):
            if isinstance(obj.get(key), str):
                metadata["arch"] = obj[key]
                break
    tensors = _unwrap(obj, p)
    return Checkpoint(tensors=tensors, metadata=metadata, path=str(p))


def _unwrap(obj: Any, p: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # at most a few levels of wrapping
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise EffnetError(f"checkpoint {p} holds a {type(obj).__name__}, not a dictionary of weights")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise EffnetError(f"checkpoint {p} contains no tensors")
    for prefix in ("module.", "_orig_mod.", "model."):
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)``, then move the file over ``path``.

    The temporary file lives beside its destination and is fsynced before the rename, so a
    crash, a kill or a full disk never leaves a half-written file where a good one was; a
    failed write raises :class:`EffnetError` saying the previous file is intact. The file gets
    the permissions of any new file (0666 less the umask).
    """
    p = Path(path)
    tmp = ""
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_path = create_temp_beside(p, ".tmp")
        mode = stat.S_IMODE(os.fstat(fd).st_mode)  # what the umask made of 0666
        os.close(fd)
        tmp = str(tmp_path)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fchmod(fh.fileno(), mode)  # writers such as safetensors may replace the file with a 0600 one
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except (OSError, SafetensorError) as exc:  # safetensors reports its I/O errors as SafetensorError
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if getattr(exc, "errno", None) == errno.ENOSPC or f"(os error {errno.ENOSPC})" in str(exc):
            raise EffnetError(f"no space left on the device while writing {p}; the previous file is intact") from None
        reason = getattr(exc, "strerror", None) or _short(exc)
        raise EffnetError(f"could not write {p}: {reason}; the previous file is intact") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_checkpoint(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: dict[str, Any],
    sparse: bool = False,
) -> Path:
    """Write effnet's format atomically: safetensors with JSON metadata under the ``effnet`` key.

    With ``sparse=True``, tensors with at least a quarter zeros are stored as a bit mask plus their
    non-zero values (:func:`read_checkpoint` restores them); the file shrinks with the sparsity.
    """
    meta = {"format": EFFNET_FORMAT, "format_version": FORMAT_VERSION, **metadata}
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if sparse:
        contiguous, index = _encode_sparse(contiguous)
        if index:
            meta["sparse"] = index
    return atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata={"effnet": json.dumps(meta)}))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]
