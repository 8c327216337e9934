#!/usr/bin/env python3
"""Random blobs of one size in an HTTP cache's cas/ folder, for the benches.

    make_blobs.py CAS_DIR OUT_PREFIX N SIZE

Writes N blobs of SIZE random bytes as CAS_DIR/<sha256>, then
OUT_PREFIX.manifest (topfetch fetch: "HASH SIZE dK/fI.bin", 100 folders) and
OUT_PREFIX.curl (a curl config of the same files: url = "BASE/cas/HASH",
output = "OUT/dK/fI.bin"; the caller puts the cache URL for BASE and the
output folder for OUT).
"""
import hashlib
import os
import sys

cas, prefix, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(f"{prefix}.manifest", "w") as m, open(f"{prefix}.curl", "w") as c:
    for i in range(n):
        data = os.urandom(size)
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(cas, h), "wb") as f:
            f.write(data)
        p = f"d{i % 100}/f{i}.bin"
        m.write(f"{h} {size} {p}\n")
        c.write(f'url = "BASE/cas/{h}"\noutput = "OUT/{p}"\n')
