#!/usr/bin/env python3
"""Hand-encoded protobuf for hostile inputs (BEP streams, ActionResults,
Trees, serve requests) in the tests and the fuzz corpus. Field numbers are
from proto/build_event_stream.proto, proto/remote_execution.proto and
proto/topfetch_service.proto; nothing but Python is needed."""
import hashlib
import os


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, payload):  # length-delimited
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def vfield(num, value):  # varint
    return varint(num << 3) + varint(value)


def s(num, text):
    return field(num, text if isinstance(text, bytes) else text.encode())


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ---- BEP ----------------------------------------------------------------------------
STARTED, NAMED_SET, TARGET_COMPLETED, BUILD_TOOL_LOGS = 3, 13, 5, 20
PREFIX = ("bazel-out", "k8-fastbuild", "bin")


def bep_file(name, digest=None, length=None, prefix=PREFIX):
    m = s(1, name) + b"".join(s(4, p) for p in prefix)
    if digest is not None:
        m += s(5, digest) + vfield(6, length)
    return m


def ev_named_set(set_id, files=(), refs=()):
    body = b"".join(field(1, f) for f in files) + b"".join(field(2, s(1, r)) for r in refs)
    return field(1, field(NAMED_SET, s(1, set_id))) + field(15, body)


def ev_target(label, set_ids, group="default", success=True):
    g = s(1, group) + b"".join(field(3, s(1, i)) for i in set_ids)
    return field(1, field(TARGET_COMPLETED, s(1, label))) + field(8, vfield(1, 1 if success else 0) + field(2, g))


def ev_started(children=()):
    return field(1, field(STARTED, b"")) + b"".join(field(2, c) for c in children) + field(5, s(5, "build"))


def ev_last():
    return field(1, field(BUILD_TOOL_LOGS, b"")) + field(23, b"") + vfield(20, 1)


def bep(events):
    return b"".join(varint(len(e)) + e for e in events)


def bep_build(sets, targets):
    """sets: [(id, files, refs)], targets: [(label, [set ids])] -> a whole stream."""
    ev = [ev_started()]
    ev += [ev_named_set(i, f, r) for i, f, r in sets]
    ev += [ev_target(label, ids) for label, ids in targets]
    ev.append(ev_last())
    return bep(ev)


# ---- REAPI ----------------------------------------------------------------------------
def digest(h, size):
    return s(1, h) + vfield(2, size)


def action_result(files=(), dirs=(), file_symlinks=()):
    """files: [(path, hash, size, executable)], dirs: [(path, tree hash, size)]."""
    m = b""
    for p, h, n, x in files:
        m += field(2, s(1, p) + field(2, digest(h, n)) + (vfield(4, 1) if x else b""))
    for p, h, n in dirs:
        m += field(3, s(1, p) + field(3, digest(h, n)))
    for p, t in file_symlinks:
        m += field(10, s(1, p) + s(2, t))
    return m


def directory(files=(), dirs=(), symlinks=()):
    """files: [(name, hash, size)], dirs: [(name, hash, size)] -> a Directory."""
    m = b"".join(field(1, s(1, n) + field(2, digest(h, z))) for n, h, z in files)
    m += b"".join(field(2, s(1, n) + field(2, digest(h, z))) for n, h, z in dirs)
    m += b"".join(field(3, s(1, n) + s(2, t)) for n, t in symlinks)
    return m


def tree(root, children=()):
    return field(1, root) + b"".join(field(2, c) for c in children)


def dag_bomb(levels):
    """A Tree of `levels` directories, each naming the next twice: 2^levels paths."""
    leaf = directory(files=[("f", sha(b"x"), 1)])
    children = [leaf]
    d = leaf
    for _ in range(levels - 1):
        d = directory(dirs=[("a", sha(d), len(d)), ("b", sha(d), len(d))])
        children.append(d)
    root = children.pop()
    return tree(root, children)


# ---- disk cache ------------------------------------------------------------------------
def disk_put(cache, area, blob, key=None):
    key = key or sha(blob)
    d = os.path.join(cache, area, key[:2])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, key), "wb") as f:
        f.write(blob)
    return key


def driver_dirs(tmp):
    """A disk cache TMP/cache (ac/, cas/) and TMP/actions for session_driver --actions
    (each file there is an ActionResult named by its action key). Returns (cache, actions)."""
    cache, actions = os.path.join(tmp, "cache"), os.path.join(tmp, "actions")
    os.makedirs(os.path.join(cache, "ac"), exist_ok=True)
    os.makedirs(os.path.join(cache, "cas"), exist_ok=True)
    os.makedirs(actions, exist_ok=True)
    return cache, actions
