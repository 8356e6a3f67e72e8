"""The ops console: ``GET /console`` and its bundled assets (no token: the page holds no
data; it asks for a token and sends it with every API call it makes).

The assets are built by npm at build time (``make console``: ``sitetune/console/``,
esbuild bundles the page and niivue into ``dist/``); nothing is fetched from a CDN at run
time. The page is sent with a Content-Security-Policy that allows only this origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
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
    "connect-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleNotBuilt(SitetuneError):
    """The page was asked for on an install whose console assets were not built."""

    status = 503
    default_code = "console_not_built"


def _asset(name: str) -> FileResponse:
    if not (DIST / "index.html").is_file():
        raise ConsoleNotBuilt(
            "the console's assets are not built: run `make console` (npm) on the build host"
        )
    path = DIST / name
    # only plain files directly in dist/ with a known type: no traversal, no listing
    if "/" in name or name.startswith(".") or path.suffix not in MEDIA_TYPES or not path.is_file():
        raise NotFound(f"no console asset {name!r}", code="route_not_found")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)


@router.get("/console")
def console() -> FileResponse:
    """The console page (a single-page app; views are chosen by the URL's fragment)."""
    return _asset("index.html")


@router.get("/console/")
def console_slash() -> RedirectResponse:
    return RedirectResponse("/console", status_code=308)


@router.get("/console/{name:path}")
def console_asset(name: str) -> FileResponse:
    return _asset(name)
