"""Streams, .npy and safetensors files written and read by independent code
(python3-msgpack, numpy, json + struct), following schemas/*.md and
man/vl2v-stream.5 rather than the C library.

  msgpack_interop.py write DIR        writes the inputs of the golden tests
  msgpack_interop.py check-dump A.mp DUMP.jsonl
                                      mpdump --full output equals what msgpack reads
  msgpack_interop.py check-stream FILE SCHEMA N
                                      FILE is a valid stream of N items (header,
                                      history, trailer) as a schema document says
  msgpack_interop.py check-npy A.mp X.npy IDS LABELS
                                      mpnpy export equals the stream's vectors
  msgpack_interop.py same-vectors A.mp B.mp
                                      equal ids, vectors (bit-exact) and labels
"""
import json
import os
import struct
import sys

import msgpack
import numpy as np

CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


def header(schema, **keys):
    h = {"schema": schema, "version": 1, "history": [["msgpack_interop.py", "write"]]}
    h.update(keys)
    return h


def trailer(n, dropped=0):
    return {"end": True, "records": n, "dropped": dropped}


def f32(values):
    return np.asarray(values, dtype="<f4").tobytes()


def emb_items():
    """Three embedding items with exactly representable values."""
    out = []
    for i, (dom, cls) in enumerate([("photo", "dog"), ("art_painting", "horse"), ("sketch", "person")]):
        vec = [0.5 * (i + 1), -0.25, 1.0 / 1024 * i, 3.0 - i]
        out.append({"id": f"{dom}/{cls}/pic_{i:03d}.jpg", "vec": f32(vec), "label": CLASSES.index(cls),
                    "class": cls, "domain": dom, "split": "train"})
    return out


def write_stream(path, objs):
    with open(path, "wb") as f:
        for o in objs:
            f.write(msgpack.packb(o, use_bin_type=True))


def emb_header(dim=4, space="teacher:test-clip"):
    return header("embedding", dim=dim, dtype="f32le", space=space)


def write_inputs(d):
    items = emb_items()
    write_stream(f"{d}/emb.mp", [emb_header()] + items + [trailer(3)])
    # the same vectors in another order, one value moved by 1e-7
    near = [dict(x) for x in reversed(items)]
    v = np.frombuffer(near[0]["vec"], dtype="<f4").copy()
    v[0] += np.float32(1e-7) * v[0]
    near[0]["vec"] = v.tobytes()
    write_stream(f"{d}/emb_near.mp", [emb_header()] + near + [trailer(3)])
    # another shard of the same run: other images, so other ids
    shard = [dict(x, id="cartoon/" + x["id"].split("/", 1)[1], domain="cartoon") for x in items]
    write_stream(f"{d}/emb_b.mp", [emb_header()] + shard + [trailer(3)])
    # one value moved by 0.01, one item missing, one extra, a label changed
    far = [dict(x) for x in items]
    v = np.frombuffer(far[1]["vec"], dtype="<f4").copy()
    v[2] += np.float32(0.01)
    far[1]["vec"] = v.tobytes()
    far[0]["label"] = 5
    far = far[:2] + [{"id": "extra/item.jpg", "vec": f32([0, 0, 0, 0])}]
    write_stream(f"{d}/emb_far.mp", [emb_header()] + far + [trailer(3)])
    # bad items: NaN, wrong length, no id; upstream dropped 1
    bad = [items[0],
           {"id": "nan.jpg", "vec": f32([1, float("nan"), 0, 0])},
           {"id": "short.jpg", "vec": f32([1, 2])},
           {"vec": f32([1, 2, 3, 4])},
           items[1]]
    write_stream(f"{d}/emb_bad.mp", [emb_header()] + bad + [trailer(5, 1)])
    write_stream(f"{d}/emb_dim8.mp", [emb_header(8)] + [trailer(0)])
    write_stream(f"{d}/emb_space.mp", [emb_header(space="student:resnet50")] + [trailer(0)])
    # 40-dim vectors: shortened by mpdump unless --full
    long = [{"id": f"long{i}", "vec": f32([k / 8 - i for k in range(40)]), "view": i} for i in range(2)]
    write_stream(f"{d}/emb40.mp", [emb_header(40)] + long + [trailer(2)])
    # unknown keys everywhere: readers ignore them
    extra = dict(items[0])
    extra["future"] = {"nested": [1, 2.5, None, True], "blob": b"\x00\x01\xff"}
    h = emb_header()
    h["producer_note"] = "unknown header key"
    t = trailer(1)
    t["seconds"] = 1.25
    write_stream(f"{d}/emb_unknown.mp", [h, extra, t])

    img = [{"id": "photo/dog/a.jpg", "h": 2, "w": 3, "pix": bytes(range(18)), "label": 0, "class": "dog",
            "domain": "photo", "path": "/data/PACS/photo/dog/a.jpg"},
           {"id": "sketch/dog/b.png", "h": 4, "w": 4, "pix": bytes((7 * k) % 256 for k in range(48)), "view": 1}]
    write_stream(f"{d}/image.mp", [header("image", dtype="u8", layout="hwc", c=3)] + img + [trailer(2)])

    pred = [{"id": "cartoon/dog/1.jpg", "pred": 0, "logits": f32([2.5, -1, 0.125, 0, 0, 0, -3]), "label": 0,
             "domain": "cartoon", "split": "test"},
            {"id": "cartoon/house/2.jpg", "pred": 5, "logits": f32([0, 0, 0, 0, 0, 1.5, 0]), "label": 3}]
    write_stream(f"{d}/pred.mp", [header("prediction", classes=CLASSES)] + pred + [trailer(2)])

    # error inputs
    v2 = emb_header()
    v2["version"] = 2
    write_stream(f"{d}/v2.mp", [v2] + items + [trailer(3)])
    good = open(f"{d}/emb.mp", "rb").read()
    hlen = len(msgpack.packb(emb_header(), use_bin_type=True))
    i1 = len(msgpack.packb(items[0], use_bin_type=True))
    open(f"{d}/trunc_item.mp", "wb").write(good[:hlen + i1 + 10])
    open(f"{d}/trunc_between.mp", "wb").write(good[:hlen + i1])
    open(f"{d}/garbage.txt", "wb").write(b"id,vec\nphoto/dog/1.jpg,0.5 0.25\n")
    # a bin32 length of 3 GiB in the first item
    open(f"{d}/oversized.mp", "wb").write(good[:hlen] + b"\x81\xa3vec\xc6\xc0\x00\x00\x00" + b"\x00" * 16)
    # two streams back to back, as parallel --pipe leaves them (two shards)
    open(f"{d}/two.mp", "wb").write(good + open(f"{d}/emb_b.mp", "rb").read())

    # numpy side: an array, ids and labels for mpnpy import
    arr = np.array([[1.5, -2, 0.25], [0, 1e-3, 7], [3, 3, 3]], dtype="<f4")
    np.save(f"{d}/vecs.npy", arr)
    np.save(f"{d}/vecs64.npy", arr.astype("<f8"))
    np.save(f"{d}/vecs_nan.npy", np.array([[1, 2, 3], [np.nan, 0, 0]], dtype="<f4"))
    np.save(f"{d}/vecs_fortran.npy", np.asfortranarray(np.ones((3, 2), dtype="<f4")))
    np.save(f"{d}/vecs_int.npy", np.ones((2, 2), dtype="<i4"))
    open(f"{d}/vecs.ids", "w").write("a/1.jpg\nb/2.jpg\nc/3.jpg\n")
    open(f"{d}/vecs.labels", "w").write("0\n-1\n6\n")
    open(f"{d}/vecs2.ids", "w").write("a\nb\n")

    write_safetensors(f"{d}/model.safetensors")
    bad = open(f"{d}/model.safetensors", "rb").read()
    open(f"{d}/bad_len.safetensors", "wb").write(struct.pack("<Q", 1 << 40) + bad[8:])
    open(f"{d}/truncated.safetensors", "wb").write(bad[:-3])
    hdr = b'{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}'
    open(f"{d}/bad_shape.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + b"\x00" * 16)
    # 2^64 elements in 0 bytes: a count computed without an overflow check wraps to 0
    hdr = b'{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}'
    open(f"{d}/overflow.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr)


def write_safetensors(path):
    """A safetensors file written by hand from the format description."""
    tensors = {
        "encoder.layer.0.weight": np.arange(12, dtype="<f4").reshape(3, 4) / 4,
        "encoder.layer.0.bias": np.array([1, -1, 0.5], dtype="<f4"),
        "embed.half": np.array([[1, 2], [3, 65504]], dtype="<f2"),
        "embed.bf16": np.array([0x3f80, 0xc000], dtype="<u2"),  # 1.0, -2.0 as bfloat16 bits
        "position_ids": np.arange(5, dtype="<i8").reshape(1, 5),
        "scalar": np.array(2.0, dtype="<f4"),
    }
    dtypes = {"<f4": "F32", "<f2": "F16", "<u2": "BF16", "<i8": "I64"}
    meta = {"format": "pt", "source": "msgpack_interop.py"}
    hdr, off, blobs = {"__metadata__": meta}, 0, []
    for name in sorted(tensors, reverse=True):  # data in another order than the names
        a = tensors[name]
        b = a.tobytes()
        hdr[name] = {"dtype": dtypes[a.dtype.str], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_stream(path):
    """All objects of a stream file, checked for the framing in the schema documents."""
    with open(path, "rb") as f:
        objs = list(msgpack.Unpacker(f, raw=False, strict_map_key=False))
    return objs


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check_stream(path, schema, n):
    objs = read_stream(path)
    h, items, t = objs[0], objs[1:-1], objs[-1]
    if h.get("schema") != schema or h.get("version") != 1:
        fail(f"{path}: header {h.get('schema')!r} version {h.get('version')!r}")
    hist = h.get("history")
    if not isinstance(hist, list) or not hist or not all(isinstance(a, list) and all(isinstance(s, str) for s in a)
                                                         for a in hist):
        fail(f"{path}: history is not a list of argv lists: {hist!r}")
    if t != {"end": True, "records": len(items), "dropped": t.get("dropped")} or not isinstance(t["dropped"], int):
        fail(f"{path}: trailer {t!r} for {len(items)} items")
    if len(items) != n:
        fail(f"{path}: {len(items)} items, expected {n}")
    for it in items:
        if not isinstance(it.get("id"), str):
            fail(f"{path}: item without id")
        if schema == "embedding":
            if h["dtype"] != "f32le" or not isinstance(h["space"], str):
                fail(f"{path}: embedding header {h!r}")
            if not isinstance(it["vec"], bytes) or len(it["vec"]) != 4 * h["dim"]:
                fail(f"{path}: vec of {len(it['vec'])} bytes for dim {h['dim']}")
    print(f"PASS: msgpack reads {os.path.basename(path)}: {schema}, {n} items, history {len(hist)}, "
          f"trailer {t}")


def dump_value(v, key=None):
    """What mpdump --full prints for a value, computed independently."""
    if isinstance(v, bytes):
        if key in ("vec", "logits"):
            return [float(x) for x in np.frombuffer(v, dtype="<f4")]
        if key == "pix":
            return list(v)
        return {"bin": len(v), "hex": v.hex()}
    if isinstance(v, dict):
        return {k: dump_value(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [dump_value(x) for x in v]
    return v


def check_dump(stream, dump):
    objs = read_stream(stream)
    lines = [json.loads(x) for x in open(dump)]
    if len(lines) != len(objs):
        fail(f"mpdump printed {len(lines)} lines for {len(objs)} objects")
    for k, (o, line) in enumerate(zip(objs, lines)):
        want = dump_value(o)
        if want != line:
            fail(f"mpdump line {k + 1}: {line!r} != {want!r}")
    print(f"PASS: mpdump --full of {os.path.basename(stream)} equals msgpack's reading, value for value "
          f"({len(lines)} lines)")


def check_npy(stream, npy, ids, labels):
    objs = read_stream(stream)
    items = objs[1:-1]
    a = np.load(npy)
    want = np.stack([np.frombuffer(it["vec"], dtype="<f4") for it in items])
    if a.dtype != np.dtype("<f4") or a.shape != want.shape or not np.array_equal(a, want):
        fail(f"{npy}: {a.dtype} {a.shape} differs from the stream's vectors {want.shape}")
    got_ids = open(ids).read().split("\n")
    if got_ids != [it["id"] for it in items] + [""]:
        fail(f"{ids}: {got_ids!r}")
    got_lab = [int(x) for x in open(labels).read().split()]
    if got_lab != [it.get("label", -1) for it in items]:
        fail(f"{labels}: {got_lab!r}")
    print(f"PASS: numpy loads mpnpy's {os.path.basename(npy)}: {a.shape} float32 equal to the stream, "
          f"ids and labels in order")


def same_vectors(a, b):
    ia, ib = read_stream(a)[1:-1], read_stream(b)[1:-1]
    ka = [(x["id"], x["vec"], x.get("label")) for x in ia]
    kb = [(x["id"], x["vec"], x.get("label")) for x in ib]
    if ka != kb:
        fail(f"{a} and {b} differ in ids, vectors or labels")
    print(f"PASS: {os.path.basename(a)} and {os.path.basename(b)}: same ids, vectors (bit-exact) and labels")


def raw_items(path):
    """The encoded bytes of each item of a one-stream file."""
    data = open(path, "rb").read()
    u = msgpack.Unpacker(raw=False, strict_map_key=False)
    u.feed(data)
    out, start = [], 0
    for _ in u:
        end = u.tell()
        out.append(data[start:end])
        start = end
    return out[1:-1]


def same_item_bytes(a, b):
    if raw_items(a) != raw_items(b):
        fail(f"the items of {a} and {b} are not the same bytes")
    print(f"PASS: {os.path.basename(b)} holds the items of {os.path.basename(a)} byte for byte")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "write":
        write_inputs(sys.argv[2])
    elif cmd == "check-stream":
        check_stream(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "check-dump":
        check_dump(sys.argv[2], sys.argv[3])
    elif cmd == "check-npy":
        check_npy(*sys.argv[2:6])
    elif cmd == "same-item-bytes":
        same_item_bytes(sys.argv[2], sys.argv[3])
    elif cmd == "same-vectors":
        same_vectors(sys.argv[2], sys.argv[3])
    else:
        fail(f"unknown command {cmd}")
