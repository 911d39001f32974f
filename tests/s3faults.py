"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the moto S3 server, for tests.

Each request is, by a seeded draw: forwarded as it is; answered 503 SlowDown or 500 InternalError
(S3's own XML bodies) without reaching moto; cut off (the connection closed with no response, as a
reset); or forwarded late (a slow response). Only loopback is ever contacted.
"""
from __future__ import annotations

import http.client
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERROR_XML = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
             '<RequestId>fault</RequestId></Error>')
FAULTS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultProxy:
    """Start with `with FaultProxy(upstream, share=0.2, seed=1) as p: p.url`; `p.counts` says what it did."""

    def __init__(self, upstream: str, share: float = 0.2, seed: int = 0, slow_s: float = 0.5):
        up = urlsplit(upstream)
        assert up.hostname in ("127.0.0.1", "localhost"), "the proxy only forwards to loopback"
        self.upstream = (up.hostname, up.port)
        self.share, self.slow_s = share, slow_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"forwarded": 0, "slowdown": 0, "internal": 0, "reset": 0, "slow": 0}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def draw(self) -> str:
        with self.lock:
            r = self.rng.random()
            kind = "forwarded"
            if r < self.share:
                kind = ("slowdown", "internal", "reset", "slow")[int(r / self.share * 4)]
            self.counts[kind] += 1
            return kind

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind = proxy.draw()
                if kind == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                if kind in FAULTS:
                    status, code, message = FAULTS[kind]
                    data = ERROR_XML.format(code=code, message=message).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if kind == "slow":
                    time.sleep(proxy.slow_s)
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP and (k.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(k, v)  # HEAD: the object's length, with no body
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler

    def __enter__(self) -> "FaultProxy":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
