"""The generation routes: each is the shared turn loop (``_turn.py``) with its wire format.
A further format (Anthropic Messages) is one more route here with its own ``WireFormat``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from ._openai_chat import CHAT
from ._openai_responses import RESPONSES
from ._openapi import MESSAGE_SCHEMA, json_body
from ._requests import _ChatBody, _ResponsesBody
from ._state import get_state
from ._turn import serve_turn

__all__ = ["router"]


class _RawRoute(APIRoute):
    """A route whose endpoint takes the raw :class:`Request` and returns a :class:`Response`:
    FastAPI's per-request dependency solving and response serialisation have nothing to do
    there, so they are skipped (issue 16: these routes carry the load). The route still
    declares its body in the OpenAPI schema (``openapi_extra``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


router = APIRouter(route_class=_RawRoute)


@router.post("/v1/chat/completions", openapi_extra=json_body(_ChatBody, messages=MESSAGE_SCHEMA))
async def chat(request: Request) -> Response:
    """OpenAI chat completions (streaming and not)."""
    return await serve_turn(request, get_state(request), CHAT)


@router.post("/v1/responses", openapi_extra=json_body(_ResponsesBody))
async def responses(request: Request) -> Response:
    """OpenAI Responses API: text and function tools."""
    return await serve_turn(request, get_state(request), RESPONSES)
