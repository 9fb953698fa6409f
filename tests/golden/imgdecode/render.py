#!/usr/bin/python3
"""render: an image stream on stdin as text, for the golden tests: the
header without its history (and its versions), one line per item (pixels as a digest, the
corner pixels and the mean), the trailer."""
import hashlib
import sys

import msgpack
import numpy as np

u = msgpack.Unpacker(sys.stdin.buffer, raw=False, max_bin_len=1 << 30)
for obj in u:
    if "schema" in obj:
        obj.pop("history", None)
        obj.pop("history_versions", None)
        print("header", " ".join(f"{k}={obj[k]}" for k in sorted(obj)))
    elif obj.get("end") is True:
        print("trailer", " ".join(f"{k}={obj[k]}" for k in sorted(obj)))
    else:
        p = np.frombuffer(obj.pop("pix"), np.uint8).reshape(obj["h"], obj["w"], 3)
        meta = " ".join(f"{k}={obj[k]}" for k in sorted(obj))
        print(f"item {meta} pix={hashlib.sha256(p.tobytes()).hexdigest()[:16]} "
              f"tl={tuple(int(v) for v in p[0, 0])} br={tuple(int(v) for v in p[-1, -1])} mean={p.mean():.3f}")
