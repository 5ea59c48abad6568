"""The Anthropic routes: ``POST /v1/messages`` (the server's shared turn loop with the Messages
wire format), ``POST /v1/messages/count_tokens``, and the Anthropic shape of the model listing
(docs/anthropic.md). Same backends, gate, limits, sessions and error mapping as the OpenAI routes;
only the wire format differs."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...types import Event, ModelInfo
from .._body import parse_body, read_body
from .._openapi import json_body
from .._state import get_state
from .._turn import serve_turn
from .._wire import Renderer, WireFormat
from ._errors import anthropic_error_body
from ._models import ANTHROPIC_VERSION_HEADER, model_json, models_page
from ._render import MessagesRenderer
from ._request import _CountBody, _MessagesBody, count_tokens, parse_messages

__all__ = ["MESSAGES", "anthropic_model", "anthropic_models", "router", "wants_anthropic"]


def wants_anthropic(request: Request) -> bool:
    """Whether a shared route (``/v1/models``) should answer in Anthropic's shape: every Anthropic
    SDK sends ``anthropic-version``, no OpenAI client does."""
    return ANTHROPIC_VERSION_HEADER in request.headers


def _stage(renderer: Renderer, events: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    return cast(MessagesRenderer, renderer).stage(events)


#: ``/v1/messages`` (sessions via ``X-Cursor-Session-ID``, stop sequences applied by the route).
MESSAGES = WireFormat(
    "messages",
    True,
    lambda body, strict: MessagesRenderer(parse_messages(body, strict=strict)),
    errors=anthropic_error_body,
    stage=_stage,
)

router = APIRouter()


@router.post("/v1/messages", openapi_extra=json_body(_MessagesBody))
async def create_message(request: Request) -> Response:
    """Anthropic Messages API (streaming and not)."""
    return await serve_turn(request, get_state(request), MESSAGES)


@router.post("/v1/messages/count_tokens", openapi_extra=json_body(_CountBody))
async def count_message_tokens(request: Request) -> JSONResponse:
    """An estimate of a Messages request's prompt tokens (docs/anthropic.md §6)."""
    st = get_state(request)
    raw = await read_body(request, limit=st.config.max_body_bytes, timeout_s=st.config.body_timeout_s)
    tokens = await parse_body(raw, count_tokens)
    return JSONResponse({"input_tokens": tokens}, headers={"x-cursorpipe-usage-estimated": "true"})


def anthropic_models(started_at: float, models: list[ModelInfo]) -> JSONResponse:
    """``GET /v1/models`` in Anthropic's shape."""
    return JSONResponse(models_page(models, started_at))


def anthropic_model(started_at: float, info: ModelInfo) -> JSONResponse:
    """``GET /v1/models/{id}`` in Anthropic's shape."""
    return JSONResponse(model_json(info, started_at))
