#!/usr/bin/env python3
"""A misbehaving HTTP cache for the fault tests: a test double of faults no
real server makes on demand (the real caches in the suite stay nginx).

    badcache.py ROOT FAULT PORTFILE

serves ROOT/cas/<hash> and ROOT/ac/<hash> on a free loopback port (written
to PORTFILE once it listens). Blobs whose hash is listed in ROOT/good are
always served correctly; every other GET gets FAULT:

  truncated   Content-Length says N, half the bytes come, then the connection closes
  short       Content-Length says N-1 and N-1 bytes come (a lie about the size)
  long        Content-Length says N+100, N bytes come, then the connection closes
  reset       headers and half the body, then a TCP reset
  drip        the right bytes: the first ten one every 0.3 s, then the rest
  corrupt     N bytes, but not the blob's
  error500    HTTP 500
  redirect    HTTP 302 to the same path on another (closed) port
  huge        Content-Length of 8 GiB and bytes until the client hangs up
  slowdrip    the right bytes: the first four one every 1.5 s, then the rest
  stall       half the bytes, then silence for a minute
PUT and HEAD behave (HEAD: 404 for a blob it does not hold)."""
import http.server
import os
import socket
import struct
import sys
import time

root, fault, portfile = sys.argv[1], sys.argv[2], sys.argv[3]
good = set()
if os.path.exists(os.path.join(root, "good")):
    good = set(open(os.path.join(root, "good")).read().split())


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def blob(self):
        parts = self.path.split("/")
        if len(parts) < 3 or parts[-2] not in ("ac", "cas"):
            return None, None
        p = os.path.join(root, parts[-2], parts[-1])
        return parts[-1], (open(p, "rb").read() if os.path.exists(p) else None)

    def do_HEAD(self):
        key, data = self.blob()
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data) if data is not None else 0))
        self.end_headers()

    def do_PUT(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def plain(self, code, body=b"", extra=()):
        self.send_response(code)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        key, data = self.blob()
        if data is None:
            return self.plain(404, b"not found")
        if key in good or fault == "none":
            return self.plain(200, data)
        n = len(data)
        if fault == "error500":
            return self.plain(500, b"internal error")
        if fault == "redirect":
            return self.plain(302, b"", [("Location", "http://127.0.0.1:1" + self.path)])
        if fault == "corrupt":
            return self.plain(200, bytes((b ^ 0xFF) for b in data))
        if fault == "short":
            return self.plain(200, data[:-1])
        self.send_response(200)
        length = {"truncated": n, "long": n + 100, "reset": n, "drip": n, "huge": 8 << 30, "slowdrip": n,
                  "stall": n}[fault]
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()
        if fault == "drip":
            for i in range(min(10, n)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(data[10:])
            return
        if fault in ("slowdrip", "stall"):
            return self.slow(data, fault)
        if fault == "huge":
            chunk = b"\0" * 65536
            try:
                for _ in range((8 << 30) // 65536):
                    self.wfile.write(chunk)
            except OSError:
                pass
            self.close_connection = True
            return
        self.wfile.write(data[: max(1, n // 2)] if fault in ("truncated", "reset") else data)
        self.wfile.flush()
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


    def slow(self, data, fault):
        try:
            if fault == "slowdrip":
                for i in range(4):
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    time.sleep(1.5)
                self.wfile.write(data[4:])
            else:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                time.sleep(60)
        except OSError:
            pass
        self.close_connection = True


class S(http.server.ThreadingHTTPServer):
    daemon_threads = True


srv = S(("127.0.0.1", 0), H)
tmp = portfile + ".tmp"
with open(tmp, "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(tmp, portfile)
srv.serve_forever()
