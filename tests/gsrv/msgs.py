#!/usr/bin/env python3
"""Request messages for tests/gsrv/gsrv_call, one file each (protobuf wire
format written by hand: the Build Event Service schema is not among our
proto/ subsets, and a 100 MB upload is not worth protoc's text format).

  msgs.py write BLOB HASH CHUNK OUTPREFIX
      ByteStream WriteRequests for BLOB in CHUNK-byte pieces: OUTPREFIX.0, ...
      (prints the file names, in order)
  msgs.py bes BEP INVOCATION FIRST LAST OUTPREFIX
      PublishBuildToolEventStreamRequests for the events FIRST..LAST (1-based
      sequence numbers) of the length-delimited BEP file; sequence number
      len(events)+1 is component_stream_finished. Prints the file names.
  msgs.py split BEP OUTPREFIX
      each record of the length-delimited BEP file into OUTPREFIX.0, ...
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from hostile import field, vfield  # noqa: E402  (the one hand encoder of the tests)


def ld(num, payload):
    return field(num, payload)


def vi(num, value):
    return vfield(num, value)


def read_bep(path):
    data, i, events = open(path, "rb").read(), 0, []
    while i < len(data):
        n = shift = 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        events.append(data[i:i + n])
        i += n
    return events


def main():
    if sys.argv[1] == "write":
        blob, h, chunk, prefix = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
        size = os.path.getsize(blob)
        with open(blob, "rb") as f:
            off, k = 0, 0
            while True:
                data = f.read(chunk)
                m = b""
                if k == 0:
                    m += ld(1, f"uploads/7b1c/blobs/{h}/{size}".encode())
                m += vi(2, off)
                if off + len(data) >= size:
                    m += vi(3, 1)
                m += ld(10, data)
                open(f"{prefix}.{k}", "wb").write(m)
                print(f"{prefix}.{k}")
                off += len(data)
                k += 1
                if off >= size:
                    break
        return
    if sys.argv[1] == "bes":
        bep, inv, first, last, prefix = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
        events = read_bep(bep)
        stream_id = ld(1, b"build-" + inv.encode()) + vi(3, 3) + ld(6, inv.encode())
        for seq in range(first, last + 1):
            if seq <= len(events):
                any_ = ld(1, b"type.googleapis.com/build_event_stream.BuildEvent") + ld(2, events[seq - 1])
                event = ld(60, any_)
            else:
                event = ld(59, vi(1, 1))
            obe = ld(1, stream_id) + vi(2, seq) + ld(3, event)
            open(f"{prefix}.{seq}", "wb").write(ld(4, obe) + ld(6, b"project"))
            print(f"{prefix}.{seq}")
        return
    if sys.argv[1] == "split":
        for k, e in enumerate(read_bep(sys.argv[2])):
            open(f"{sys.argv[3]}.{k}", "wb").write(e)
        return
    sys.exit("usage: msgs.py write|bes|split ...")


main()
