"""The web page at `/`: chat and compare, static files shipped in the package (serve/static/), no build step.

The page and its files are public; the API it calls keeps its key (the page asks for it and keeps it for the
browser session). Every static answer carries a strict Content-Security-Policy: scripts only from this server,
no inline script, no other origin.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")
# style-src-attr: the math renderer (Temml) sets style attributes on the MathML it builds; <style> elements and
# stylesheets of other origins stay refused, and so does every script that is not a file of this server
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY"}


class _SecuredStatic(StaticFiles):
    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def add_webui(app: FastAPI, api_key: bool) -> None:
    """`/` (the page), `/static/…` (its scripts, styles and vendored libraries), `/webui.json` (what the page must
    know before it calls the API: whether it needs a key)."""

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={**HEADERS, "Cache-Control": "no-cache"})

    @app.get("/webui.json", include_in_schema=False)
    async def webui_config():
        return JSONResponse({"api_key_required": api_key, "router": hasattr(app.state, "router")})

    app.mount("/static", _SecuredStatic(directory=STATIC), name="static")
