"""GET /v1/models, /v1/models/{model} and /health."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from smalto.apps.serve import protocol as p
from smalto.apps.serve.routes.audio import RECOGNISER
from smalto.apps.serve.state import BEARER, ERRORS, Server, server

router = APIRouter()


@router.get("/v1/models", response_model=p.ModelList, responses=ERRORS, dependencies=[Depends(BEARER)],
            tags=["models"])
async def models(s: Server = Depends(server)):
    """The served model, and the speech recogniser behind /v1/audio/transcriptions (a model of its own)."""
    return p.ModelList(data=[p.ModelCard(id=s.cfg.model_name, created=s.created),
                             p.ModelCard(id=RECOGNISER, created=s.created)])


@router.get("/v1/models/{model}", response_model=p.ModelCard, responses=ERRORS, dependencies=[Depends(BEARER)],
            tags=["models"])
async def model_card(model: str, s: Server = Depends(server)):
    if model != RECOGNISER:
        s.check_model(model)
    return p.ModelCard(id=model, created=s.created)


@router.get("/health", response_model=p.Health, tags=["server"])
async def health(s: Server = Depends(server)):
    w = s.worker
    return p.Health(status="draining" if w.closing else "ok", model=s.cfg.model_name, queued=w.queued,
                    max_queue=s.cfg.max_queue, served=w.served)
