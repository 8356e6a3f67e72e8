"""A loopback HTTP server answering canned JSON: the client's test double of API.md.

It records every request (method, path, query, headers, body) so tests can check what the
client sent, and answers from routes the test sets: a fixed answer, a list of answers
served in turn (the last one repeats), or a function of the request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def form(self) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
        """Multipart fields ``{name: value}`` and files ``{name: (filename, bytes)}``."""
        head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + self.body)
        fields, files = {}, {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if part.get_filename() is None:
                fields[name] = payload.decode()
            else:
                files[name] = (part.get_filename(), payload)
        return fields, files


@dataclass
class Answer:
    status: int = 200
    body: object = field(default_factory=dict)  # JSON, or bytes / str sent as they are
    headers: dict[str, str] = field(default_factory=dict)


Route = Answer | list[Answer] | Callable[[Request], Answer]


@dataclass
class FakeService:
    url: str = ""
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def on(self, method: str, path: str, route: Route) -> None:
        self.routes[(method, path)] = route

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def answer(self, request: Request) -> Answer:
        route = self.routes.get((request.method, request.path))
        if route is None:
            return Answer(404, {"error": {"code": "not_found", "message": "Not Found"}})
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route(request) if callable(route) else route


def _handler(service: FakeService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            request = Request(
                self.command,
                url.path,
                {k: v[-1] for k, v in parse_qs(url.query).items()},
                {k.lower(): v for k, v in self.headers.items()},
                self._body(),
            )
            service.requests.append(request)
            answer = service.answer(request)
            body = answer.body
            if isinstance(body, str):
                body = body.encode()
            elif not isinstance(body, bytes):
                body = json.dumps(body).encode()
                answer.headers.setdefault("Content-Type", "application/json")
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().strip(), 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        do_GET = do_POST = _serve

        def log_message(self, *_: object) -> None:
            pass

    return Handler


@pytest.fixture
def fake() -> Iterator[FakeService]:
    service = FakeService()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(service))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    service.url = f"http://127.0.0.1:{httpd.server_port}"
    try:
        yield service
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
