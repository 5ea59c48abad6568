"""Operational routes: health (liveness, readiness, a summary) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import __version__
from ._errors import APIError
from ._state import ServerState, get_state

__all__ = ["router"]

router = APIRouter()


def _health(state: ServerState) -> dict[str, Any]:
    problem = state.problem()
    status = "draining" if state.phase == "draining" else "degraded" if problem else "ok"
    return {
        "status": status,
        "degraded": problem,
        "phase": state.phase,
        "emulated": state.emulated,
        "backend": "emulator" if state.emulated else state.config.backend_url,
        "strategy": state.config.strategy.value,
        "transport": state.client.transport_name,
        "credentials": state.config.has_credentials,
        "warmup_error": state.warmup_error,
        "active_requests": state.gate.in_use,
        "sessions": len(state.sessions),
        "version": __version__,
    }


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """Liveness plus a summary (``status`` ``degraded`` with the reason when requests keep
    failing the same way); 503 only while draining."""
    st = get_state(request)
    body = _health(st)
    if st.gateway is not None:
        # The shared store is reported, not folded into the status: without it stateless
        # requests are still served (readiness stays 200), only session requests get 503.
        body["gateway"] = {
            "auth_mode": st.config.auth_mode,
            "shared_state": st.gateway.shared,
            "state_problem": await st.gateway.state_problem(),
        }
    return JSONResponse(body, status_code=503 if st.phase == "draining" else 200)


@router.get("/health/live")
async def live() -> JSONResponse:
    """The process answers."""
    return JSONResponse({"status": "alive"})


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """200 once warm-up finished; 503 while starting, draining or degraded (with the reason)."""
    st = get_state(request)
    problem = st.problem() if st.phase == "ready" else None
    ok = st.phase == "ready" and problem is None
    headers = {} if ok else {"Retry-After": "1"}
    body: dict[str, Any] = {"status": "ready" if ok else st.phase, "emulated": st.emulated}
    if problem is not None:
        body.update(status="degraded", degraded=problem)
    return JSONResponse(body, status_code=200 if ok else 503, headers=headers)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text (needs the ``metrics`` extra)."""
    st = get_state(request)
    if not st.metrics.enabled:
        raise APIError(
            501,
            "Metrics need prometheus-client: pip install 'cursorpipe[metrics]'.",
            type="server_error",
            code="metrics_unavailable",
            should_retry=False,
        )
    body, content_type = st.metrics.render()
    return Response(body, media_type=content_type)
