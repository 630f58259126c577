"""Real alert receivers on loopback: a chat webhook endpoint and an SMTP server.

Used as a pytest plugin (see conftest.py)::

    def test_x(webhook_receiver, smtp_receiver):
        webhook_receiver.url               # POST JSON here; bodies land in .payloads
        webhook_receiver.status = 500      # answer every POST with 500 from now on
        smtp_receiver.config()             # an `alerts.email` block (STARTTLS + login)
        smtp_receiver.messages             # email.message.Message objects received
"""

from __future__ import annotations

import email
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

SMTP_USER = "alerts-user"
SMTP_PASSWORD = "smtp-Pw-0001-secret"


class WebhookReceiver:
    """Accepts POSTs of JSON on 127.0.0.1 and keeps each decoded body."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.status < 300:
                    receiver.payloads.append(json.loads(body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/T0/B1/xyz"

    def texts(self) -> list[str]:
        return [payload["text"] for payload in self.payloads]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.payloads) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.payloads

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))  # type: ignore[arg-type]
        return "250 OK"


def _check_login(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER
          and auth_data.password.decode() == SMTP_PASSWORD)
    return AuthResult(success=ok)


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 that requires STARTTLS (a trustme certificate) and a login."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1")
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(server_context)
        self.client_context = ssl.create_default_context()
        self.ca.configure_trust(self.client_context)
        self.inbox = _Inbox()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port,
            tls_context=server_context, require_starttls=True,
            authenticator=_check_login, auth_require_tls=True,
        )
        self._controller.start()

    @property
    def messages(self) -> list[Message]:
        return self.inbox.messages

    def config(self, **overrides: Any) -> dict[str, Any]:
        """An `alerts.email` block for this server."""
        return {"smtp_host": "127.0.0.1", "smtp_port": self.port, "starttls": True,
                "username": SMTP_USER, "password": SMTP_PASSWORD,
                "sender": "pull-pipeline@example.com", "to": ["oncall@example.com"], **overrides}

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    yield receiver
    receiver.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()
