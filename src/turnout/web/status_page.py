"""The status page: versions, splits, rollouts and breakers, live, on the admin listener.

Plain HTML, CSS and JavaScript from ``turnout/web/ui`` with no build step
and nothing from a CDN. The files hold no data, so anyone may fetch them;
the page asks for the admin token once, keeps it in ``sessionStorage`` and
sends it as ``Authorization: Bearer`` to ``GET /admin/snapshot`` every
second, and to the admin API's own endpoints for its actions.

The Content-Security-Policy lets the page run only its own script and talk
only to its own origin, and forbids framing it (a framed page could be
clicked into an action it did not mean).
"""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

__all__ = ["UI_PATHS", "setup_status_page"]

_ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}

# Served to anyone: the admin gate leaves these paths open (turnout.web.auth).
UI_PATHS = frozenset({"/", "/ui", "/ui/", *(f"/ui/{name}" for name in _ASSETS)})

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def setup_status_page(app: web.Application, *, token_required: bool) -> None:
    """Serve the status page at ``/ui/`` (and ``/``, which redirects there) on ``app``.

    ``token_required`` tells the page to ask for the admin token before it
    reads anything, so that no request of it is refused for want of one.
    """
    folder = files("turnout.web") / "ui"
    # Read once: the files are small, and a page served never touches the disk again.
    bodies = {name: (folder / name).read_bytes() for name in _ASSETS}
    auth = b"token" if token_required else b"loopback"
    bodies["index.html"] = bodies["index.html"].replace(b"{auth}", auth)

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    def asset(name: str) -> web.Response:
        return web.Response(body=bodies[name], content_type=_ASSETS[name], headers=_HEADERS)

    async def index(request: web.Request) -> web.Response:
        return asset("index.html")

    async def named(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in bodies:
            raise web.HTTPNotFound()
        return asset(name)

    app.router.add_get("/", redirect)
    app.router.add_get("/ui", redirect)
    app.router.add_get("/ui/", index)
    app.router.add_get("/ui/{name}", named)
