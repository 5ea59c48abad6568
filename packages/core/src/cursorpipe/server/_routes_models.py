"""``/v1/models``: the account's models in OpenAI's list shape (cached briefly)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from .._constants import SERVER_MODELS_CACHE_S
from ..types import ModelInfo
from ._anthropic._errors import anthropic_error_body
from ._anthropic._route import anthropic_model, anthropic_models, wants_anthropic
from ._errors import APIError
from ._gateway._callers import caller_of
from ._state import ServerState, get_state
from ._turn import ERROR_SHAPE_KEY

__all__ = ["router"]

router = APIRouter()


def _model_json(info: ModelInfo, st: ServerState) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": info.id,
        "object": "model",
        "created": int(st.started_at),
        "owned_by": st.owned_by or info.owned_by,
        "display_name": info.display_name or info.id,
        "aliases": list(info.aliases),
    }
    if info.context_window is not None:
        data["context_window"] = info.context_window
    if info.max_output_tokens is not None:
        data["max_output_tokens"] = info.max_output_tokens
    if info.supports_thinking is not None:
        data["supports_thinking"] = info.supports_thinking
    if info.supports_images is not None:
        data["supports_images"] = info.supports_images
    return data


async def _models(st: ServerState, request: Request) -> list[ModelInfo]:
    if st.gateway is not None and st.gateway.passthrough:
        # Each caller's own account: its own model list (the client caches it).
        async with st.gateway.client_for(caller_of(request.scope)) as client:
            return await client.list_models()
    now = time.monotonic()
    if st.models is not None and now - st.models_at < SERVER_MODELS_CACHE_S:
        return st.models
    models = await st.client.list_models()
    st.models, st.models_at = models, now
    return models


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    """The account's models (OpenAI list shape; Anthropic's when ``anthropic-version`` is sent)."""
    st = get_state(request)
    models = await _models(st, request)
    if wants_anthropic(request):
        return anthropic_models(st.started_at, models)
    return JSONResponse({"object": "list", "data": [_model_json(m, st) for m in models]})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> JSONResponse:
    """One model by id or alias; 404 when unknown (each in Anthropic's shape when
    ``anthropic-version`` is sent)."""
    st = get_state(request)
    anthropic = wants_anthropic(request)
    for info in await _models(st, request):
        if info.matches(model_id):
            return anthropic_model(st.started_at, info) if anthropic else JSONResponse(_model_json(info, st))
    if anthropic:
        request.scope.setdefault("state", {})[ERROR_SHAPE_KEY] = anthropic_error_body
    raise APIError(
        404,
        f"The model {model_id!r} does not exist or is not available to this Cursor account.",
        param="model",
        code="model_not_found",
        type="invalid_request_error",
        should_retry=False,
    )
