"""A local HTTP file server for download tests: 127.0.0.1 only, threaded, with ``Range`` support, a request
log, and files that can be cut off midway (the connection closes after half the body)."""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    """What the server holds and what it saw. ``cut``: file name -> how many more responses to cut at half."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)
    ranges: bool = True
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (file name, Range header)
    url: str = ""

    def gets(self, name: str) -> list[str | None]:
        """The Range headers of the requests for ``name``, in order (None: the whole file)."""
        return [r for n, r in self.requests if n == name]


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            name = urllib.parse.unquote(self.path.lstrip("/").split("?", 1)[0])
            header = self.headers.get("Range")
            served.requests.append((name, header))
            body = served.files.get(name)
            if body is None:
                self.send_error(404)
                return
            start, status = 0, 200
            match = re.fullmatch(r"bytes=(\d+)-", header or "")
            if match and served.ranges:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            part = body[start:]
            if served.cut.get(name, 0) > 0:
                served.cut[name] -= 1
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(part)

    return Handler


@contextmanager
def serve(served: Served) -> Iterator[Served]:
    """Run a server for ``served`` on a free port of 127.0.0.1; ``served.url`` is its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
