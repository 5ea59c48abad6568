"""``/v1/sessions``: open, list, read and discard server-side conversations (a chat request with
``X-Cursor-Session-ID`` sends only its new user message)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from ._body import read_body
from ._errors import APIError
from ._gateway._callers import caller_of
from ._openapi import json_body
from ._requests import parse_json_object
from ._state import get_state

__all__ = ["router"]

router = APIRouter()


class _SessionBody(BaseModel):
    """``POST /v1/sessions`` body (documentation only; the route checks it by hand)."""

    model: str = ""
    id: str | None = None


@router.post("/v1/sessions", status_code=201, openapi_extra=json_body(_SessionBody))
async def create_session(request: Request) -> JSONResponse:
    """Open a session: body ``{"model": ..., "id": optional}``."""
    st = get_state(request)
    raw = await read_body(request, limit=st.config.max_body_bytes, timeout_s=st.config.body_timeout_s)
    body = parse_json_object(raw) if raw.strip() else {}
    model = body.get("model", "")
    sid = body.get("id")
    if not isinstance(model, str):
        raise APIError(400, "model must be a string.", param="model", code="invalid_value")
    if sid is not None and not isinstance(sid, str):
        raise APIError(400, "id must be a string.", param="id", code="invalid_value")
    unknown = sorted(set(body) - {"model", "id"})
    if unknown and st.config.strict_params:
        raise APIError(
            400, f"Unsupported parameter: '{unknown[0]}'.", param=unknown[0], code="unsupported_parameter"
        )
    if st.gateway is not None:  # on the shared store, owned by the caller (issue 17)
        shared = st.gateway.sessions
        record = await shared.create(
            caller_of(request.scope), model.strip(), sid and st.sessions.check_id(sid)
        )
        return JSONResponse(shared.view(record), status_code=201)
    entry = await st.sessions.create(model.strip(), sid)
    return JSONResponse(entry.as_dict(st.sessions.idle_s), status_code=201)


@router.get("/v1/sessions")
async def list_sessions(request: Request) -> JSONResponse:
    """Live sessions."""
    st = get_state(request)
    if st.gateway is not None:
        shared = st.gateway.sessions
        data = [shared.view(r) for r in await shared.list(caller_of(request.scope))]
    else:
        data = [e.as_dict(st.sessions.idle_s) for e in st.sessions.list()]
    return JSONResponse({"object": "list", "data": data})


@router.get("/v1/sessions/{session_id}")
async def get_session(session_id: str, request: Request) -> JSONResponse:
    """One session."""
    st = get_state(request)
    if st.gateway is not None:
        shared = st.gateway.sessions
        return JSONResponse(shared.view(await shared.get(caller_of(request.scope), session_id)))
    return JSONResponse(st.sessions.get(session_id).as_dict(st.sessions.idle_s))


@router.delete("/v1/sessions/{session_id}")
async def delete_session(session_id: str, request: Request) -> JSONResponse:
    """Discard a session."""
    st = get_state(request)
    if st.gateway is not None:
        await st.gateway.sessions.delete(caller_of(request.scope), session_id)
    else:
        await st.sessions.delete(session_id)
    return JSONResponse({"id": session_id, "object": "session.deleted", "deleted": True})
