"""Checkpoint files of the PyTorch world: `.pth.tar` (torch.load, weights only) and safetensors.

torch is imported only to read or write `.pth.tar` files; safetensors are read and written here
without it (float32 out, F32 / F16 / F64 / BF16 in).
"""
import json
import logging
import os
import struct

import numpy as np

_log = logging.getLogger(__name__)


def import_torch():
    """The torch module, or an ImportError saying how to get it."""
    try:
        import torch  # noqa: PLC0415 - optional dependency
    except ImportError as e:
        raise ImportError("reading or writing .pth.tar files needs PyTorch: pip install torch "
                          "(or use --format safetensors)") from e
    return torch


def read_torch_file(path, allow_pickle=False):
    """torch.load a .pth.tar onto the CPU (weights only unless allow_pickle); clear errors."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (or, before torch 1.6, a pickle stream starting 0x80).
    if not head.startswith(b"PK") and not head.startswith(b"\x80"):
        raise ValueError(f"{path} is not a PyTorch checkpoint: it is neither a zip archive nor a "
                         f"pickle (it starts with {head!r})")
    torch = import_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:  # zip, pickle and weights-only errors all mean "cannot read this file"
        hint = "" if allow_pickle else (" (if the file holds Python objects beyond tensors and "
                                        "you trust it, pass --allow_pickle)")
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{hint}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def pick_encoder(ckpt, which, where):
    """The encoder state dict of a checkpoint dict: 'target' (target_encoder) or 'encoder'.

    A bare state dict (parameter names at the top level) is taken as the encoder itself. A file
    without a target encoder falls back to 'encoder', as the official eval loader does (logged).
    """
    if which not in ("target", "encoder"):
        raise ValueError(f"which={which!r}: use 'target' (EMA target encoder) or 'encoder'")
    if any(k.endswith("patch_embed.proj.weight") for k in ckpt):
        return ckpt
    key = "target_encoder" if which == "target" else "encoder"
    if key in ckpt:
        return ckpt[key]
    if which == "target" and "encoder" in ckpt:
        _log.warning("%s has no 'target_encoder'; using 'encoder'", where)
        return ckpt["encoder"]
    raise ValueError(f"{where} has no {key!r} entry (top-level keys: {sorted(ckpt)[:12]})")


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def write_safetensors(path, tensors, metadata):
    """{name: float32 array} + {str: str} metadata -> a .safetensors file (no torch needed)."""
    header, offset, blobs = {}, 0, []
    for name, x in tensors.items():
        blob = np.ascontiguousarray(x, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(x)),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def read_safetensors(path):
    """A .safetensors file -> ({name: float32 array}, metadata dict)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            data = f.read()
        metadata = header.pop("__metadata__", {}) or {}
        out = {}
        for name, info in header.items():
            if info["dtype"] == "BF16":
                raw = np.frombuffer(data, "<u2", offset=info["data_offsets"][0],
                                    count=(info["data_offsets"][1] - info["data_offsets"][0]) // 2)
                x = (raw.astype(np.uint32) << 16).view(np.float32)
            else:
                dtype = np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<")
                start, end = info["data_offsets"]
                x = np.frombuffer(data[start:end], dtype)
            out[name] = x.reshape(info["shape"]).astype(np.float32)
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a readable float safetensors file: "
                         f"{type(e).__name__}: {e}") from e
    return out, metadata
