"""A fake OIDC identity provider for the console's sign-in: the authorization endpoint
approves at once (or refuses, when told to) and redirects back with a code; the token
endpoint checks the code, the redirect URI and the PKCE verifier (S256), then issues a
JWT signed with the test key the service trusts."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse


class FakeIdp:
    def __init__(self, port: int, client_id: str, mint) -> None:
        self.client_id, self.mint = client_id, mint  # mint(**claims) -> signed JWT
        self.codes: dict[str, dict] = {}
        self.refuse = False  # True: the user "declines" at the provider
        self.claims = {"preferred_username": "dr.console", "roles": ["ops"]}
        self.exchanges: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeIdp:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # the authorization endpoint
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                ok = (url.path == "/authorize" and q.get("client_id") == idp.client_id
                      and q.get("response_type") == "code" and q.get("code_challenge")
                      and q.get("code_challenge_method") == "S256")  # fmt: skip
                if not ok:
                    self.send_response(400)
                    self.end_headers()
                    return
                if idp.refuse:
                    answer = {"error": "access_denied", "error_description": "the user declined",
                              "state": q.get("state", "")}  # fmt: skip
                else:
                    code = secrets.token_urlsafe(16)
                    idp.codes[code] = q
                    answer = {"code": code, "state": q.get("state", "")}
                self.send_response(302)
                self.send_header("Location", f"{q['redirect_uri']}?{urlencode(answer)}")
                self.end_headers()

            def do_POST(self) -> None:  # the token endpoint
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                asked = idp.codes.pop(form.get("code", ""), None)  # a code works once
                verifier = form.get("code_verifier", "").encode()
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest())
                good = (asked is not None and form.get("grant_type") == "authorization_code"
                        and form.get("redirect_uri") == asked["redirect_uri"]
                        and form.get("client_id") == idp.client_id
                        and challenge.rstrip(b"=").decode() == asked["code_challenge"])  # fmt: skip
                idp.exchanges.append({"form": form, "granted": good})
                body = ({"access_token": idp.mint(**idp.claims), "token_type": "Bearer"} if good
                        else {"error": "invalid_grant"})  # fmt: skip
                raw = json.dumps(body).encode()
                self.send_response(200 if good else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler
