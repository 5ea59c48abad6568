"""The generation routes: each is the shared turn loop (``_turn.py``) with its wire format.
A further format (Anthropic Messages) is one more route here with its own ``WireFormat``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ._openai_chat import CHAT
from ._openai_responses import RESPONSES
from ._openapi import MESSAGE_SCHEMA, json_body
from ._requests import _ChatBody, _ResponsesBody
from ._state import get_state
from ._turn import serve_turn

__all__ = ["router"]

router = APIRouter()


@router.post("/v1/chat/completions", openapi_extra=json_body(_ChatBody, messages=MESSAGE_SCHEMA))
async def chat(request: Request) -> Response:
    """OpenAI chat completions (streaming and not)."""
    return await serve_turn(request, get_state(request), CHAT)


@router.post("/v1/responses", openapi_extra=json_body(_ResponsesBody))
async def responses(request: Request) -> Response:
    """OpenAI Responses API: text and function tools."""
    return await serve_turn(request, get_state(request), RESPONSES)
