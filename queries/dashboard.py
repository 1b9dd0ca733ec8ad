"""The dashboard: a page of the platform itself, reading everything through the query API.

The page holds no data and needs no key to load: it asks for the read key, keeps it in the
browser's session storage and sends it as Bearer on every API call, the live stream included.
Its own modules are in queries/dashboard/app; the third-party ones (Preact, htm, uPlot) come
from the npm registry through `make install` (`npm ci` in queries/dashboard) and are served
from node_modules by name, never from a CDN.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.errors import ApiError

HERE = Path(__file__).parent / "dashboard"
MODULES = HERE / "node_modules"

# The files of the npm packages the page loads, by the name it loads them under.
VENDOR: dict[str, str] = {
    "preact.js": "preact/dist/preact.module.js",
    "preact-hooks.js": "preact/hooks/dist/hooks.module.js",
    "htm.js": "htm/dist/htm.module.js",
    "uplot.js": "uplot/dist/uPlot.esm.js",
    "uplot.css": "uplot/dist/uPlot.min.css",
}
_MEDIA = {".js": "text/javascript", ".css": "text/css"}
_IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.S)

router = APIRouter(include_in_schema=False)


def _page() -> tuple[str, str]:
    """index.html and its Content-Security-Policy: scripts from this origin only, plus the inline import map
    by its hash."""
    html = (HERE / "index.html").read_text()
    digests = [base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() for m in _IMPORT_MAP.findall(html)]
    scripts = " ".join(f"'sha256-{d}'" for d in digests)
    policy = (f"default-src 'self'; script-src 'self' {scripts}; style-src 'self' 'unsafe-inline'; "
              "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")  # fmt: skip
    return html, policy


MISSING = """<!doctype html><html lang="en"><meta charset="utf-8"><title>cdp dashboard</title>
<body style="font-family:system-ui;max-width:40rem;margin:4rem auto">
<h1>The dashboard's modules are not installed</h1>
<p>Run <code>make install</code> (it runs <code>npm ci</code> in <code>queries/dashboard</code>), then reload.
The API works without them: <a href="/docs">/docs</a>.</p></body></html>"""


def installed() -> bool:
    return all((MODULES / path).is_file() for path in VENDOR.values())


@router.get("/")
def root() -> Response:
    return RedirectResponse("/dashboard", status_code=307)


@router.get("/dashboard")
def dashboard() -> Response:
    if not installed():
        return HTMLResponse(MISSING, status_code=503)
    html, policy = _page()
    return HTMLResponse(html, headers={"Content-Security-Policy": policy, "Cache-Control": "no-cache",
                                       "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})  # fmt: skip


@router.get("/dashboard/vendor/{name}")
def vendor(name: str) -> Response:
    path = VENDOR.get(name)
    if path is None:
        raise ApiError(404, "not_found", f"no dashboard module {name!r}; the modules are {', '.join(VENDOR)}")
    file = MODULES / path
    if not file.is_file():
        raise ApiError(503, "dashboard_not_installed", "the dashboard's modules are not installed: run `make install` "
                                                       "(npm ci in queries/dashboard)")  # fmt: skip
    return FileResponse(file, media_type=_MEDIA[Path(name).suffix], headers={"Cache-Control": "max-age=3600"})


def mount(app: FastAPI) -> None:
    """The page's routes and its own modules (queries/dashboard/app) on the app."""
    app.include_router(router)
    app.mount("/dashboard/app", StaticFiles(directory=HERE / "app"), name="dashboard-app")
