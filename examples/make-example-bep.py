#!/usr/bin/env python3
"""Writes examples/bep.bin: the BEP of a small imaginary build whose outputs
are the blobs in examples/disk-cache (Bazel's --disk_cache layout). Its Files
carry digest and length, as Bazel 7+ writes them, so `topfetch collect` can
find every file without a proxy store. Encodes protobuf by hand (field
numbers from build_event_stream.proto) to need nothing but Python."""
import hashlib, os, sys

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

def field(num, payload):          # length-delimited
    return varint(num << 3 | 2) + varint(len(payload)) + payload

def vfield(num, value):           # varint
    return varint(num << 3) + varint(value)

def s(num, text):
    return field(num, text.encode())

def event_id(kind, body=b""):     # BuildEventId oneof
    return field(kind, body)

STARTED, NAMED_SET, TARGET_COMPLETED, BUILD_TOOL_LOGS = 3, 13, 5, 20
here = os.path.dirname(os.path.abspath(__file__))
cache = os.path.join(here, "disk-cache", "cas")
blobs = {}
for d in os.listdir(cache):
    for h in os.listdir(os.path.join(cache, d)):
        blobs[h] = os.path.getsize(os.path.join(cache, d, h))

def file_msg(name, content_hash, size):
    return (s(1, name) + b"".join(s(4, p) for p in ("bazel-out", "k8-fastbuild", "bin"))
            + s(5, content_hash) + vfield(6, size))

def digest_of(path_in_manifest):
    for line in open(os.path.join(here, "manifest.txt")):
        if line.startswith("#"):
            continue
        parts = line.split()
        if parts[-1] == path_in_manifest:
            return parts[0], int(parts[1])
    sys.exit(f"{path_in_manifest} is not in manifest.txt")

targets = [
    ("//app:hello", ["app/bin/hello.sh"]),
    ("//app:share", ["app/share/greeting.txt", "app/share/copy-of-greeting.txt"]),
    ("//app:data", ["app/lib/data.bin", "app/empty.txt"]),
]
ids = []
for i, (label, _) in enumerate(targets):
    ids.append(event_id(NAMED_SET, s(1, str(i))))
    ids.append(event_id(TARGET_COMPLETED, s(1, label)))
ids.append(event_id(BUILD_TOOL_LOGS))

events = []
started = field(1, event_id(STARTED)) + b"".join(field(2, c) for c in ids) + field(5, s(5, "build"))
events.append(started)
for i, (label, files) in enumerate(targets):
    ns = b""
    for f in files:
        h, size = digest_of(f)
        ns += field(1, file_msg(f, h, size))
    events.append(field(1, ids[2 * i]) + field(15, ns))
    group = s(1, "default") + field(3, s(1, str(i)))
    events.append(field(1, ids[2 * i + 1]) + field(8, vfield(1, 1) + field(2, group)))
events.append(field(1, ids[-1]) + field(23, b"") + vfield(20, 1))

with open(os.path.join(here, "bep.bin"), "wb") as out:
    for e in events:
        out.write(varint(len(e)) + e)
