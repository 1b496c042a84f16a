#!/usr/bin/env python3
"""An HTTP proxy in front of an S3 server on 127.0.0.1 that adds latency to
every request and counts requests by class, for bench/cloud.sh.

    bench/s3proxy.py [--listen 127.0.0.1:8334] [--upstream 127.0.0.1:8333]
                     [--latency-ms 20] [--counts-file FILE] [--trace FILE]

Point a client at http://127.0.0.1:8334 (path-style addressing; with
--listen 127.0.0.1:0 a free port is picked and named on the first line of
stderr): requests
go to the upstream unchanged, Host header included, so SigV4 signatures
still match. Each request waits --latency-ms before it is forwarded (one
round trip to a nearby region).

Classes: PUT (a whole object), PART (a multipart part), MPU (multipart
create, complete or abort), GET, HEAD, LIST (object and multipart-upload
listings, bucket-level GETs), DELETE (one object, or a bulk delete POST),
OTHER. Bytes up and down are counted too.

Admin endpoints (not counted, no latency):
    GET  /__proxy/counts            counts as JSON
    POST /__proxy/reset             zero the counts
    POST /__proxy/latency?ms=N      change the latency
SIGUSR1 writes the counts to --counts-file (JSON); so does exit
(SIGTERM, SIGINT). --trace appends a line per request when it is answered:
start and end in ms since the proxy started, class, method and path, to
show which requests a command makes one after another.

Standard library only. A thread per client connection, a kept-alive
upstream connection per thread, bodies streamed in 1 MiB pieces.
"""

import argparse
import http.client
import http.server
import json
import signal
import socket
import sys
import threading
import time
import urllib.parse

CLASSES = ("PUT", "PART", "MPU", "GET", "HEAD", "LIST", "DELETE", "OTHER")
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "upgrade", "expect",
}
PIECE = 1 << 20


class Stats:
    def __init__(self, latency_ms):
        self.lock = threading.Lock()
        self.latency = latency_ms / 1000.0
        self.reset()

    def reset(self):
        with self.lock:
            self.counts = {c: 0 for c in CLASSES}
            self.storage_classes = {}
            self.bytes_up = 0
            self.bytes_down = 0
            self.started = time.time()

    def add(self, cls):
        with self.lock:
            self.counts[cls] += 1

    def add_storage_class(self, folder, cls):
        """Counts a write that asked for a storage class, by object folder."""
        with self.lock:
            key = f"{folder}:{cls}"
            self.storage_classes[key] = self.storage_classes.get(key, 0) + 1

    def add_bytes(self, up=0, down=0):
        with self.lock:
            self.bytes_up += up
            self.bytes_down += down

    def snapshot(self):
        with self.lock:
            d = dict(self.counts)
            d["total"] = sum(self.counts.values())
            d["bytes_up"] = self.bytes_up
            d["bytes_down"] = self.bytes_down
            d["storage_classes"] = dict(self.storage_classes)
            d["latency_ms"] = round(self.latency * 1000, 3)
            d["seconds"] = round(time.time() - self.started, 3)
            return d


def classify(method, path, query):
    """The request class of an S3 request (path-style addressing)."""
    q = urllib.parse.parse_qs(query, keep_blank_values=True)
    bucket_level = "/" not in path.strip("/")
    if method == "HEAD":
        return "HEAD"
    if method == "GET":
        if "uploads" in q or "list-type" in q or bucket_level:
            return "LIST"
        return "GET"
    if method == "PUT":
        if "partNumber" in q and "uploadId" in q:
            return "PART"
        return "PUT"
    if method == "POST":
        if "uploads" in q or "uploadId" in q:
            return "MPU"
        if "delete" in q:
            return "DELETE"
        return "OTHER"
    if method == "DELETE":
        return "MPU" if "uploadId" in q else "DELETE"
    return "OTHER"


class Trace:
    """One line per answered request: start and end (ms), class, method, path."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.origin = time.monotonic()
        self.file = open(path, "a", buffering=1)

    def write(self, started, kind, method, path):
        ended = time.monotonic()
        with self.lock:
            self.file.write(f"{(started - self.origin) * 1000:9.1f} {(ended - self.origin) * 1000:9.1f} "
                            f"{kind:6} {method:6} {path}\n")


def make_handler(stats, upstream, trace=None):
    host, port = upstream
    local = threading.local()

    def connection(fresh=False):
        conn = getattr(local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=300)
            local.conn = conn
        return conn

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def do_any(self):
            path, _, query = self.path.partition("?")
            if path.startswith("/__proxy/"):
                return self.admin(path, query)
            kind = classify(self.command, path, query)
            stats.add(kind)
            started = time.monotonic()
            storage_class = self.headers.get("x-amz-storage-class")
            if storage_class and self.command in ("PUT", "POST"):
                folders = ("data", "index", "snapshots", "keys", "locks",
                           "deletions", "deleted", "config")
                parts = path.strip("/").split("/")
                folder = next((p for p in parts if p in folders), "other")
                stats.add_storage_class(folder, storage_class)
            if stats.latency > 0:
                time.sleep(stats.latency)
            body = self.read_body()
            try:
                resp = self.forward(body, fresh=False)
            except (http.client.HTTPException, OSError):
                # A kept-alive upstream connection that was closed: once more.
                resp = self.forward(body, fresh=True)
            self.relay(resp)
            if trace is not None:
                trace.write(started, kind, self.command, path)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_any

        def read_body(self):
            """The request body, whole (S3 requests carry a length; chunked
            bodies are read and re-sent with one)."""
            n = self.headers.get("Content-Length")
            if n is not None:
                n = int(n)
                parts = []
                while n > 0:
                    b = self.rfile.read(min(n, PIECE))
                    if not b:
                        break
                    parts.append(b)
                    n -= len(b)
                data = b"".join(parts)
            elif "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                data = b"".join(parts)
            else:
                data = None
            if data:
                stats.add_bytes(up=len(data))
            return data

        def forward(self, body, fresh):
            conn = connection(fresh)
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                lk = k.lower()
                if lk in HOP_BY_HOP or lk == "transfer-encoding" or lk == "content-length":
                    continue
                conn.putheader(k, v)
            if body is not None or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders()
            if body:
                view = memoryview(body)
                for i in range(0, len(view), PIECE):
                    conn.send(view[i:i + PIECE])
            return conn.getresponse()

        def relay(self, resp):
            self.send_response_only(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
            chunked = False
            for k, v in resp.getheaders():
                lk = k.lower()
                if lk in HOP_BY_HOP or lk == "transfer-encoding":
                    continue
                self.send_header(k, v)
            if length is None and not no_body:
                self.send_header("Transfer-Encoding", "chunked")
                chunked = True
            self.end_headers()
            if no_body:
                resp.read()
                return
            down = 0
            while True:
                b = resp.read(PIECE)
                if not b:
                    break
                down += len(b)
                if chunked:
                    self.wfile.write(b"%x\r\n" % len(b) + b + b"\r\n")
                else:
                    self.wfile.write(b)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            stats.add_bytes(down=down)
            if resp.will_close:
                connection(fresh=True)

        def admin(self, path, query):
            if path == "/__proxy/reset":
                stats.reset()
            elif path == "/__proxy/latency":
                ms = float(urllib.parse.parse_qs(query).get("ms", ["0"])[0])
                stats.latency = ms / 1000.0
            elif path != "/__proxy/counts":
                self.send_error(404)
                return
            body = (json.dumps(stats.snapshot()) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:8334")
    ap.add_argument("--upstream", default="127.0.0.1:8333")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--counts-file")
    ap.add_argument("--trace")
    a = ap.parse_args()
    lhost, lport = a.listen.rsplit(":", 1)
    uhost, uport = a.upstream.rsplit(":", 1)
    if uhost not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("s3proxy: the upstream must be on 127.0.0.1")
    stats = Stats(a.latency_ms)

    def dump(*_):
        if a.counts_file:
            with open(a.counts_file, "w") as f:
                json.dump(stats.snapshot(), f)
                f.write("\n")

    def stop(*_):
        dump()
        sys.exit(0)

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    trace = Trace(a.trace) if a.trace else None
    server = Server((lhost, int(lport)), make_handler(stats, (uhost, int(uport)), trace))
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    host, port = server.server_address[:2]
    # The first line names the address (port 0 picks a free one).
    print(f"s3proxy: listening on {host}:{port} -> {a.upstream}, {a.latency_ms} ms per request",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        dump()


if __name__ == "__main__":
    main()
