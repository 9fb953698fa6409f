"""st_io: safetensors and vl2v stream helpers for the PyTorch reference tests,
written from the formats' definitions (no safetensors package needed).

safetensors: 8-byte little-endian header length, a JSON header mapping each
name to {dtype, shape, data_offsets} (plus optional "__metadata__"), then the
raw little-endian data."""
import json
import struct

import msgpack
import numpy as np

_DT = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "F16": np.float16,
       "U8": np.uint8}
_NAME = {np.dtype(v): k for k, v in _DT.items()}


def st_save(path, tensors, metadata=None):
    """tensors: name -> numpy array (or torch tensor)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name]
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(a)
        b = a.tobytes()
        header[name] = {"dtype": _NAME[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def st_load(path):
    """Returns (name -> numpy array, metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(data[base + a:base + b], dtype=_DT[e["dtype"]]).reshape(e["shape"])
    return out, meta


def write_image_stream(path, images, labels=None):
    """images: list of (id, HxWx3 uint8 array)."""
    with open(path, "wb") as f:
        f.write(msgpack.packb({"schema": "image", "version": 1, "history": [["test"]], "dtype": "u8",
                               "layout": "hwc", "c": 3}))
        for i, (iid, im) in enumerate(images):
            item = {"id": iid, "h": int(im.shape[0]), "w": int(im.shape[1]), "pix": im.tobytes()}
            if labels is not None:
                item["label"] = int(labels[i])
            f.write(msgpack.packb(item, use_bin_type=True))
        f.write(msgpack.packb({"end": True, "records": len(images), "dropped": 0}))


def read_stream(path):
    """Returns (header, items, trailer)."""
    with open(path, "rb") as f:
        objs = list(msgpack.Unpacker(f, raw=False))
    return objs[0], objs[1:-1], objs[-1]


def rel_err(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = max(np.abs(want).max(), 1e-12)
    return float(np.abs(got - want).max() / scale)
