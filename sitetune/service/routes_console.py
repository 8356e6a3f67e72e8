"""The ops console: ``GET /console`` and its bundled assets (no token: the page holds no
data; it asks for a token and sends it with every API call it makes).

The assets are built by npm at build time (``make console``: ``sitetune/console/``,
esbuild bundles the page and niivue into ``dist/``); nothing is fetched from a CDN at run
time. The page is sent with a Content-Security-Policy that allows only this origin (and,
where the console signs people in through OIDC, the identity provider's token endpoint).
``GET /console/config`` tells the page how to sign in: a pasted token, or OIDC's
authorization code flow with PKCE for a public client (`Settings.oidc_console_client_id`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse

from sitetune.errors import NotFound, SitetuneError

router = APIRouter(include_in_schema=False)

DIST = Path(__file__).resolve().parent.parent / "console" / "dist"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".map": "application/json",
}
# WebGL (niivue) needs no eval; images drawn from fetched blobs; fetch only to this origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self' blob:{token_origin}; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleNotBuilt(SitetuneError):
    """The page was asked for on an install whose console assets were not built."""

    status = 503
    default_code = "console_not_built"


def oidc_login(settings) -> dict | None:
    """What the page needs for OIDC sign-in, or None when it is not configured."""
    urls = (settings.oidc_authorization_url, settings.oidc_token_url)
    if not (settings.oidc_console_client_id and settings.oidc_issuer and all(urls)):
        return None
    return {"issuer": settings.oidc_issuer, "client_id": settings.oidc_console_client_id,
            "authorization_endpoint": urls[0], "token_endpoint": urls[1],
            "scope": settings.oidc_scope}  # fmt: skip


def _headers(request: Request) -> dict:
    login = oidc_login(request.app.state.sitetune.settings)
    token_origin = ""
    if login is not None:
        url = urlparse(login["token_endpoint"])
        token_origin = f" {url.scheme}://{url.netloc}"
    return {**HEADERS, "Content-Security-Policy": CSP.format(token_origin=token_origin)}


def _asset(request: Request, name: str) -> FileResponse:
    if not (DIST / "index.html").is_file():
        raise ConsoleNotBuilt(
            "the console's assets are not built: run `make console` (npm) on the build host"
        )
    path = DIST / name
    # only plain files directly in dist/ with a known type: no traversal, no listing
    if "/" in name or name.startswith(".") or path.suffix not in MEDIA_TYPES or not path.is_file():
        raise NotFound(f"no console asset {name!r}", code="route_not_found")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=_headers(request))


@router.get("/console")
def console(request: Request) -> FileResponse:
    """The console page (a single-page app; views are chosen by the URL's fragment)."""
    return _asset(request, "index.html")


@router.get("/console/config")
def console_config(request: Request) -> dict:
    """How the page signs people in: ``oidc`` (issuer, public client id, endpoints,
    scope) where configured, else null (a pasted token)."""
    return {"oidc": oidc_login(request.app.state.sitetune.settings)}


@router.get("/console/")
def console_slash() -> RedirectResponse:
    return RedirectResponse("/console", status_code=308)


@router.get("/console/{name:path}")
def console_asset(request: Request, name: str) -> FileResponse:
    return _asset(request, name)
