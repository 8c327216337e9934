#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<harness>/ from the real fixtures
(tests/fixtures/bazel-4.2.3: Bazel 4.2.3's BEPs, the ActionResults of its
cache) and from the inputs of the hostile test's defects (README.md). Run it
again after changing a fixture; the files it writes are committed."""
import io
import os
import struct
import sys
import tarfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "tests", "lib"))
from hostile import *  # noqa: E402,F401,F403

fixtures = os.path.join(root, "tests", "fixtures", "bazel-4.2.3")
corpus = os.path.join(here, "corpus")


def put(harness, name, data):
    d = os.path.join(corpus, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


H = sha(b"hello\n")
G = sha(b"other\n")

# ---- bep: the three real streams, the example, and the defects ----
for run in ("run1_populate", "run2_minimal_hits", "run3_toplevel_hits"):
    put("bep", run, open(os.path.join(fixtures, run, "bep.bin"), "rb").read())
put("bep", "example", open(os.path.join(root, "examples", "bep.bin"), "rb").read())
put("bep", "conflict-two-digests", bep_build(
    [("0", [bep_file("a.txt", H, 6)], []), ("1", [bep_file("a.txt", G, 6)], [])],
    [("//p:a", ["0"]), ("//p:b", ["1"])]))
put("bep", "cycle", bep_build([("0", [bep_file("a.txt", H, 6)], ["1"]), ("1", [], ["0"])], [("//p:a", ["0"])]))
put("bep", "undefined-set", bep_build([("0", [], ["9"])], [("//p:a", ["0"])]))
put("bep", "deep-chain", bep_build([(str(i), [], [str(i + 1)]) for i in range(300)] + [("300", [], [])],
                                   [("//p:a", ["0"])]))
put("bep", "nul-in-name", bep_build([("0", [bep_file("a.txt\0zz", H, 6)], [])], [("//p:a", ["0"])]))
put("bep", "escape-in-name", bep_build([("0", [bep_file("\x1b]0;owned\x07\x1b[2Ja.txt", H, 6)], [])],
                                       [("//p:\x1b[2J", ["0"])]))
put("bep", "huge-length", bep_build([("0", [bep_file("a.txt", H, 2**63 - 1)], [])], [("//p:a", ["0"])]))
put("bep", "empty", b"")  # found by fuzz_bep: pointer arithmetic on the reader's NULL buffer
put("bep", "many-sets", bep_build([(str(i), [], []) for i in range(300)],
                                  [("//p:a", [str(i) for i in range(300)])]))

# ---- action and tree: the fixture cache's ActionResults, and the defects ----
with tarfile.open(os.path.join(fixtures, "cache.tar.gz")) as t:
    for m in t.getmembers():
        if m.isfile() and m.name.startswith("ac/"):
            put("action", "fixture-" + m.name[3:15], t.extractfile(m).read())
put("action", "nul-in-path", action_result(files=[("pkg/a.txt\0zz", H, 6, False)]))
put("action", "escape-in-path", action_result(files=[("pkg/\x1b[2Ja.txt", H, 6, False)]))
put("action", "symlink-to-etc", action_result(file_symlinks=[("pkg/link", "/etc/passwd")]))
bomb = dag_bomb(40)
put("action", "tree-bomb-x100", action_result(dirs=[(f"pkg/d{i}", sha(bomb), len(bomb)) for i in range(100)]))
put("action", "escape-path", action_result(files=[("../../etc/passwd", H, 6, False)]))
put("tree", "dag-bomb-40", bomb)
put("tree", "small", tree(directory(files=[("a.txt", H, 6)], dirs=[("sub", sha(directory(files=[("b", G, 6)])), 0)],
                                    symlinks=[("l", "a.txt")]), [directory(files=[("b", G, 6)])]))
put("tree", "dotdot", tree(directory(files=[("..", H, 6)])))
put("tree", "nul-name", tree(directory(files=[("a\0b", H, 6)])))

# ---- manifest ----
put("manifest", "example", open(os.path.join(root, "examples", "manifest.txt"), "rb").read())
put("manifest", "conflict", f"{H} 6 a.txt\n{G} 6 a.txt\n{H} 6 x b\r\n# comment\n\n".encode())
put("manifest", "bad", f"{H} -1 a\n{H} 99999999999999999999 a\nZZ 6 a\n{H} 6 x \n{H} 6 a\0b\n".encode())
put("manifest", "only-comment", b"# nothing\n")  # found by fuzz_manifest: qsort of no entries (NULL)
put("manifest", "long-comment", b"#" + b"c" * 10000 + b"\n" + f"{H} 6 a\n".encode())


# ---- service: requests, each prefixed by its length (2 bytes, big endian) ----
def reqs(*rs):
    return b"".join(struct.pack(">H", len(r)) + r for r in rs)


started = field(1, s(1, "all"))
ar = action_result(files=[("bazel-out/k8-fastbuild/bin/pkg/a.txt", H, 6, False)])
executed = field(2, s(1, "0" * 64) + s(2, "//pkg:a") + s(3, ar))
target = field(3, s(1, "//pkg:a") + field(4, s(1, "default") + field(
    2, s(1, "bazel-out/k8-fastbuild/bin/pkg/a.txt") + s(2, H) + vfield(3, 6))))
finished = field(4, b"")
put("service", "build", reqs(started, executed, target, finished))
put("service", "status", reqs(field(5, b"")))
put("service", "no-build", reqs(executed, finished))
put("service", "nul-path", reqs(started, field(2, s(1, "1" * 64) + s(2, "//p:b") + s(3, action_result(
    files=[("bazel-out/k8-fastbuild/bin/pkg/a\0b", H, 6, False)]))), finished))
put("service", "tree-bomb", reqs(started, field(2, s(1, "2" * 64) + s(2, "//p:c") + s(3, action_result(
    dirs=[("bazel-out/k8-fastbuild/bin/pkg/d", sha(bomb), len(bomb))]))), finished))

# ---- proxy_path ----
for i, p in enumerate([f"/ac/{H}", f"/cas/{H}", f"/prefix/x/cas/{H}", f"cas/{H}", f"/xcas/{H}",
                       f"/cas/{H.upper()}", "/cas/", f"/ac/{H}/", f"/../cas/{H}"]):
    put("proxy_path", f"seed{i}", p.encode())

# ---- credjson: a credential helper's answer ----
for name, text in [
        ("bearer", '{"headers": {"Authorization": ["Bearer abc.def"]}, "expires": "2030-01-02T03:04:05Z"}'),
        ("two-values", '{"headers": {"X-A": ["1", "2"], "X-B": []}}'),
        ("escapes", '{"headers": {"K": ["\\u00e9\\ud83d\\ude00\\n\\"\\\\"]}}'),
        ("unknown-keys", '{"v": [1.5e3, -0, true, false, null, {"a": [[]]}], "headers": {}}'),
        ("not-a-list", '{"headers": {"Authorization": "Basic x"}}'),
        ("lone-surrogate", '{"headers": {"K": ["\\ud83d"]}}'),
        ("deep", '{"x": ' + "[" * 40 + "]" * 40 + "}"),
        ("empty", "{}")]:
    put("credjson", name, text.encode())
# ---- proxy_http: the request lines Bazel 4.2.3 sent to its cache (the fixture's
# nginx access logs), with the headers its HTTP cache client sends, and hostile heads ----
seen = set()
for run in ("run1_populate", "run2_minimal_hits", "run3_toplevel_hits"):
    for line in open(os.path.join(fixtures, run, "access.log")):
        method, uri = line.split()[1:3]
        if (method, uri[:4]) in seen:
            continue
        seen.add((method, uri[:4]))
        head = (f"{method} {uri} HTTP/1.1\r\nhost: 127.0.0.1:9090\r\nconnection: keep-alive\r\n"
                f"accept: */*\r\naccept-encoding: gzip\r\n")
        if method == "PUT":
            head += "content-type: application/octet-stream\r\ncontent-length: 6\r\n\r\nhello\n"
        else:
            head += "\r\n"
        put("proxy_http", f"bazel-{run}-{method}-{uri[1:3]}", head.encode())
K = f"/cas/{H}"
for name, raw in [
    ("get-hello", f"GET {K} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("head-hello", f"HEAD {K} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("put-hello", f"PUT {K} HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nhello\n"),
    ("put-wrong-bytes", f"PUT {K} HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nhellO\n"),
    ("put-chunked", f"PUT {K} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello\n\r\n0\r\n\r\n"),
    ("put-two-lengths", f"PUT {K} HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nContent-Length: 60\r\n\r\nhello\n"),
    ("put-plus-length", f"PUT {K} HTTP/1.1\r\nHost: x\r\nContent-Length: +6\r\n\r\nhello\n"),
    ("put-huge-length", f"PUT {K} HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nhello\n"),
    ("put-short-body", f"PUT {K} HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\n\r\nhello\n"),
    ("pipelined", f"GET {K} HTTP/1.1\r\nHost: x\r\n\r\nHEAD {K} HTTP/1.1\r\nHost: x\r\n\r\nGET /ac/{G} HTTP/1.1\r\n\r\n"),
    ("http10", f"GET {K} HTTP/1.0\r\n\r\n"),
    ("bad-method", f"DELETE {K} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("dotdot", f"GET /cas/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("escape-in-path", f"GET /\x1b]0;owned\x07{K} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("folded-header", f"GET {K} HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n"),
    ("long-header", f"GET {K} HTTP/1.1\r\nHost: x\r\nX-Long: {'a' * 8000}\r\n\r\n"),
    ("unfinished", f"GET {K} HTTP/1.1\r\nHost: x\r\nX-Slow: "),
    ("head-split", f"PUT\0{K}\0" + "6"),
]:
    put("proxy_http", name, raw.encode())

# ---- grpc_request: what a client sends the proxy's gRPC front end; the first
# byte picks the decoder (0: ByteStream WriteRequest, 1: BES stream request,
# 2 + i: the i-th unary method in proxy/grpc.c's table) ----
def any_event(payload):
    return field(1, b"type.googleapis.com/build_event_stream.BuildEvent") + field(2, payload)


bes_stream_id = field(1, s(1, "build-1") + s(6, "0c4a5e1e-9c2c-4f0b-8a0e-2f1d7b0e6a11"))
first_event = open(os.path.join(fixtures, "run1_populate", "bep.bin"), "rb").read()
ln, pos = 0, 0
for shift in range(0, 35, 7):  # the first BEP record's varint length
    b = first_event[pos]
    ln |= (b & 0x7F) << shift
    pos += 1
    if b < 0x80:
        break
first_event = first_event[pos:pos + ln]
for name, payload in [
        ("write-first", bytes([0]) + s(1, f"uploads/6b1d0c1e-0000-4000-8000-000000000001/blobs/{H}/6") +
         vfield(2, 0) + field(10, b"hel")),
        ("write-last", bytes([0]) + vfield(2, 3) + vfield(3, 1) + field(10, b"lo\n")),
        ("write-instance", bytes([0]) + s(1, f"team/ci/uploads/u/blobs/{H}/6/extra") + vfield(3, 1) +
         field(10, b"hello\n")),
        ("write-wrong-type", bytes([0]) + vfield(1, 7)),
        ("bes-event", bytes([1]) + field(4, bes_stream_id + vfield(2, 1) + field(3, field(60, any_event(first_event))))),
        ("bes-finished", bytes([1]) + field(4, bes_stream_id + vfield(2, 2) + field(3, field(59, b"")))),
        ("bes-bad-id", bytes([1]) + field(4, field(1, s(6, "../../etc")) + vfield(2, 1))),
        ("bes-wrong-any", bytes([1]) + field(4, bes_stream_id + vfield(2, 1) +
                                             field(3, field(60, field(1, b"type.googleapis.com/x.Y")))))]:
    put("grpc_request", name, payload)
# Unary requests: GetCapabilities, GetActionResult, UpdateActionResult,
# FindMissingBlobs, BatchReadBlobs, BatchUpdateBlobs, ByteStream.Read,
# QueryWriteStatus (the table's order).
unary = [s(1, "team/ci"),
         s(1, "") + field(2, digest(H, 6)),
         field(2, digest(G, 142)) + field(3, action_result([("pkg/a.txt", H, 6, False)])),
         field(2, digest(H, 6)) + field(2, digest(G, 6)),
         field(2, digest(H, 6)),
         field(2, field(1, digest(H, 6)) + field(2, b"hello\n")),
         s(1, f"blobs/{H}/6") + vfield(2, 1) + vfield(3, 4),
         s(1, f"uploads/u/blobs/{H}/6")]
for i, payload in enumerate(unary):
    put("grpc_request", f"unary{i}", bytes([2 + i]) + payload)
