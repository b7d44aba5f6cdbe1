"""A small local HTTP server for reference tests: static files with ETag, Range (also
``bytes=N-``), If-Match (412 when the ETag moved) and switchable misbehaviour."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True  # honour Range
    head: bool = True  # answer HEAD (else 405)
    etags: bool = True
    fail_next: int = 0  # answer 503 to this many requests first
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def make_handler(b: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.serve(head=True)

        def do_GET(self) -> None:
            self.serve(head=False)

        def reply(self, status: int, headers: dict[str, str], body: bytes = b"",
                  head: bool = False) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def serve(self, head: bool) -> None:
            b.requests.append((self.command, self.path, dict(self.headers)))
            if b.fail_next > 0:
                b.fail_next -= 1
                return self.reply(503, {})
            if head and not b.head:
                return self.reply(405, {})
            data = b.files.get(self.path)
            if data is None:
                return self.reply(404, {})
            hdrs = {"Last-Modified": "Tue, 02 Jan 2024 03:04:05 GMT"}
            if b.etags:
                hdrs["ETag"] = etag_of(data)
            im = self.headers.get("If-Match")
            if im is not None and b.etags and im != etag_of(data):
                return self.reply(412, {})
            rng = self.headers.get("Range")
            if rng and b.ranges:
                a, _, z = rng.removeprefix("bytes=").partition("-")
                start, end = int(a), min(int(z) if z else len(data) - 1, len(data) - 1)
                if start >= len(data):
                    return self.reply(416, {"Content-Range": f"bytes */{len(data)}"})
                hdrs["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self.reply(206, hdrs, data[start:end + 1], head)
            hdrs["Content-Length"] = str(len(data))
            return self.reply(200, hdrs, data, head)

    return Handler


@contextmanager
def serve(b: Behaviour) -> Iterator[str]:
    """Serve ``b`` on 127.0.0.1 for the block; yields the base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(b))
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)
