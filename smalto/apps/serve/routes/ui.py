"""The web UI: its page, its settings and a few example scenes (static files are mounted by
`app.create_app`)."""

from __future__ import annotations

import base64
import functools
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from smalto.apps.serve.state import Server, server
from smalto.data.shapes import ShapesConfig, ShapesWorld
from smalto.plots import png_bytes

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
async def index():
    return FileResponse(STATIC / "index.html")


@router.get("/ui/config")
async def ui_config(s: Server = Depends(server)):
    pipe = s.pipe
    return {"model": s.cfg.model_name, "image_size": pipe.image_size, "needs_key": s.cfg.api_key is not None,
            "draw": pipe.draw_defaults, "examples": _examples(pipe.image_size), "clips": pipe.reads_clips,
            "sounds": pipe.hears, "sound_seconds": pipe.sound_seconds if pipe.hears else None}


@functools.lru_cache(maxsize=4)
def _examples(size: int, n: int = 6) -> list[str]:
    """A few ShapesWorld scenes as data URLs, for users with no image at hand."""
    world = ShapesWorld(ShapesConfig(image_size=size), seed=2024, split="train")
    return ["data:image/png;base64," + base64.b64encode(png_bytes(world[i].image)).decode() for i in range(n)]
