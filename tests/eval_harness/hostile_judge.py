"""A loopback OpenAI-compatible judge that misbehaves on request (real sockets, the chat-completions wire format)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

KEY = "sk-hostile-TEST-KEY-0123456789abcdefXYZ"


def completion(content: str, model: str = "test-judge") -> bytes:
    return json.dumps({
        "id": "chatcmpl-hostile", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }).encode()


class HostileJudge:
    """``behave(handler, body, n)`` answers request ``n`` (1-based) however it likes; ``reply`` is the usual way."""

    def __init__(self, behave: Callable[["HostileJudge", BaseHTTPRequestHandler, dict, int], None]):
        self.behave = behave
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"auth": self.headers.get("Authorization"), **body})
                    n = len(server.requests)
                try:
                    server.behave(server, self, body, n)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its deadline): that is the point

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @staticmethod
    def reply(handler, status: int, payload: bytes, content_type: str = "application/json", headers=()) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()

    @staticmethod
    def drip(handler, payload: bytes, every_s: float, headers_too: bool) -> None:
        """Send a 200 one byte at a time (the headers as well when ``headers_too``), forever if need be."""
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
        if not headers_too:
            handler.wfile.write(head)
            handler.wfile.flush()
            head = b""
        for i in range(len(head + payload)):
            handler.wfile.write((head + payload)[i:i + 1])
            handler.wfile.flush()
            time.sleep(every_s)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
