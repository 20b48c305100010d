"""A real-HTTP client with a cookie jar, for the reliability suite's Flask scenarios."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.request
from typing import Any


class Browser:
    """Keeps cookies like a browser; every request is real HTTP (urllib)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 10,
    ) -> tuple[int, dict[str, str], bytes]:
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=hdrs)
        try:
            with self.opener.open(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return self.request("POST", path, body, **kw)

    def login(self, user: str) -> None:
        status, _, _ = self.post("/login", {"user": user})
        assert status == 200

    def login_admin(self, user: str = "admin") -> str:
        """Sign in as the app's admin and read the dashboard's CSRF token."""
        self.login(user)
        status, _, page = self.get("/admin/maintenance")
        assert status == 200, status
        match = re.search(r'name="mg-csrf-token" content="([^"]+)"', page.decode())
        assert match, "no CSRF token on the dashboard"
        self.csrf = match.group(1)
        return self.csrf

    def admin_post(
        self, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(kw.pop("headers", {}) or {})
        if self.csrf:
            headers.setdefault("X-CSRF-Token", self.csrf)
        return self.post(path, body, headers=headers, **kw)
