"""The web studio at ``/``: plain HTML, CSS and JavaScript from ``aigc/serve/studio`` (nothing from a CDN).
It calls the same API as any client, with the key the user types in (kept in the browser's storage)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ..errors import NotFound
from ..service import route_name

router = APIRouter()
STUDIO = Path(__file__).resolve().parent.parent / "studio"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


@router.get("/")
async def index(request: Request) -> FileResponse:
    route_name(request, "studio")
    return _file("index.html")


@router.get("/studio/{name}")
async def asset(name: str, request: Request) -> FileResponse:
    route_name(request, "studio")
    return _file(name)


def _file(name: str) -> FileResponse:
    """A file of the studio folder by its plain name (no folders, so no path leaves it)."""
    path = STUDIO / name
    if "/" in name or "\\" in name or name.startswith(".") or path.suffix not in TYPES or not path.is_file():
        raise NotFound(f"the studio has no file '{name}'")
    return FileResponse(path, media_type=TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
