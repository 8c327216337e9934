#!/usr/bin/env python3
"""A TCP relay between topfetch and a real gRPC server, for the faults that
server cannot make on demand: a connection cut in the middle of an answer
(once), and a slow link. Usage:
  relay.py UPSTREAM_PORT PORT_FILE STATS_FILE [--cut BYTES] [--rate BYTES_PER_S]
Listens on a free loopback port and writes it to PORT_FILE once listening.
STATS_FILE gets "total N cuts K conns C" (bytes from the server to the
client, connections cut, connections accepted) after every chunk and
connection."""
import socket, sys, threading, time

up_port, port_file, stats_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
args = sys.argv[4:]
cut = int(args[args.index("--cut") + 1]) if "--cut" in args else 0
rate = int(args[args.index("--rate") + 1]) if "--rate" in args else 0
lock = threading.Lock()
state = {"total": 0, "cuts": 0, "conns": 0, "cut_done": cut == 0}


def stats():
    with open(stats_file + ".tmp", "w") as f:
        f.write("total %d cuts %d conns %d\n" % (state["total"], state["cuts"], state["conns"]))
    import os
    os.replace(stats_file + ".tmp", stats_file)


def pipe(src, dst, downstream, pair):
    seen = 0
    start = time.monotonic()
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if downstream:
                with lock:
                    if not state["cut_done"] and seen + len(data) >= cut:
                        state["cut_done"] = True
                        state["cuts"] += 1
                        keep = cut - seen
                        dst.sendall(data[:keep])
                        state["total"] += keep
                        stats()
                        raise ConnectionAbortedError("cut")
                    state["total"] += len(data)
                    stats()
                seen += len(data)
                if rate:
                    ahead = seen / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            dst.sendall(data)
    except OSError:
        pass
    for s in pair:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(client):
    with lock:
        state["conns"] += 1
        stats()
    try:
        up = socket.create_connection(("127.0.0.1", up_port))
    except OSError:
        client.close()
        return
    pair = (client, up)
    threading.Thread(target=pipe, args=(client, up, False, pair), daemon=True).start()
    threading.Thread(target=pipe, args=(up, client, True, pair), daemon=True).start()


ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(128)
stats()
with open(port_file + ".tmp", "w") as f:
    f.write("%d\n" % ls.getsockname()[1])
import os
os.replace(port_file + ".tmp", port_file)
while True:
    c, _ = ls.accept()
    serve(c)
