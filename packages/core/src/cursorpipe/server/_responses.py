"""``POST /v1/responses``: OpenAI's Responses API for text and function tools (what current SDKs
and agents try first), streaming (typed ``response.*`` events) and not. Function calls are output
items (``function_call``); results come back as ``function_call_output`` input items."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._redact import redact
from ..types import TextDelta, TransportInfo, TurnRequest, Usage
from ._body import OFFLOAD_MESSAGES, offload_if, parse_body, read_body
from ._chat import ClientGone, RunResult, collect, primed_stream, total_usage
from ._errors import APIError, describe
from ._requests import IGNORED_HEADER, ResponsesParams, parse_responses
from ._runs import End, EventStreamResponse, Fanout, keepalive, run_until_disconnect
from ._state import ServerState, request_timeout

__all__ = ["responses_create"]

log = logging.getLogger("cursorpipe.server")


def _usage(usage: Usage) -> dict[str, Any]:
    # As usage_json(): Cursor's input_tokens already includes cache reads and writes
    # (live-dialect.md row 13); cached_tokens is a detail of it, not an addition.
    prompt = usage.input_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": prompt + usage.output_tokens,
    }


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
        if status != "in_progress"
        else [],
    }


def _tool_choice_json(choice: Any) -> Any:
    if isinstance(choice, dict):
        return {"type": "function", "name": choice["function"]["name"]}
    return choice or "auto"


def _function_calls(result: RunResult, params: ResponsesParams, status: str) -> list[dict[str, Any]]:
    """``function_call`` output items for the run's valid calls (only the first with
    ``parallel_tool_calls: false``; invalid calls are not returned, as on chat completions)."""
    return [
        {
            "id": "fc_" + secrets.token_hex(12),
            "type": "function_call",
            "status": status,
            "call_id": call["id"],
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"],
        }
        for call in result.calls(params.parallel_tool_calls)
    ]


def _response(
    params: ResponsesParams,
    *,
    rid: str,
    created: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    finish: str | None = None,
) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if finish == "length" else None
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": "incomplete" if incomplete and status == "completed" else status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": params.instructions,
        "max_output_tokens": params.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": params.parallel_tool_calls,
        "previous_response_id": None,
        "reasoning": None,
        "store": False,
        "temperature": params.temperature,
        "text": {"format": {"type": "text"}},
        "tool_choice": _tool_choice_json(params.tool_choice),
        "tools": [{"type": "function", **t["function"]} for t in params.tools],
        "top_p": None,
        "truncation": "disabled",
        "usage": usage,
        "user": params.user,
        "metadata": params.metadata,
    }


async def responses_create(request: Request, st: ServerState) -> Response:
    """Handle one Responses API request."""
    await st.gate.acquire()  # the body is read inside the gate, as on chat completions
    handed_off = False
    try:
        raw = await read_body(request, limit=st.config.max_body_bytes, timeout_s=st.config.body_timeout_s)
        params = await parse_body(raw, lambda body: parse_responses(body, strict=st.config.strict_params))
        headers: dict[str, str] = {}
        if params.ignored:
            headers[IGNORED_HEADER] = ", ".join(params.ignored)
        timeout_s = request_timeout(request)

        def build() -> tuple[TurnRequest, str]:
            turn = st.client.build_request(
                params.model or None,
                params.messages,
                temperature=params.temperature,
                max_tokens=params.max_output_tokens,
                timeout_s=timeout_s,
                tools=params.tools,
                tool_choice=params.tool_choice,
                reasoning_effort=params.reasoning_effort,
            )
            return turn, "".join(m.text for m in turn.messages)

        turn, prompt_text = await offload_if(len(params.messages) >= OFFLOAD_MESSAGES, build)
        rid = "resp_" + secrets.token_hex(12)
        msg_id = "msg_" + secrets.token_hex(12)
        created = int(time.time())
        started = time.perf_counter()
        fanout = Fanout([st.client.run_request(turn)])
        if params.stream:
            try:
                primed = await run_until_disconnect(request, primed_stream(fanout, st.keepalive_s))
            except BaseException:
                await fanout.aclose()
                raise
            if primed is None:
                await fanout.aclose()
                raise ClientGone
            info = fanout.peek_info()
            model = info.model if info is not None and info.model else turn.model

            async def on_close() -> None:
                await fanout.aclose()
                st.gate.release()

            body = _stream(
                st,
                fanout,
                params,
                rid=rid,
                msg_id=msg_id,
                created=created,
                model=model,
                prompt_text=prompt_text,
                started=started,
            )
            handed_off = True
            return EventStreamResponse(
                body, headers=headers, on_close=on_close, ending=st.streams_ending, farewell=_farewell
            )
        try:
            results = await run_until_disconnect(request, collect(fanout))
        finally:
            await fanout.aclose()
        if results is None:
            raise ClientGone
        result = results[0]
        usage = total_usage(results, prompt_text)
        model = result.info.model if result.info is not None and result.info.model else turn.model
        text = "".join(result.text)
        calls = _function_calls(result, params, "completed")
        output = [_message(msg_id, text, "completed")] if text or not calls else []
        output += calls
        payload = _response(
            params,
            rid=rid,
            created=created,
            model=model,
            status="completed",
            output=output,
            usage=_usage(usage),
            finish=result.finish,
        )
        return JSONResponse(payload, headers=headers)
    finally:
        if not handed_off:
            st.gate.release()


def _farewell(err: APIError) -> bytes:
    """The error event ending a stream the server has to close (drain timeout)."""
    body = err.body()["error"]
    data = {"type": "error", "code": body["code"], "message": body["message"], "param": None}
    return f"event: error\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(
    st: ServerState,
    fanout: Fanout,
    params: ResponsesParams,
    *,
    rid: str,
    msg_id: str,
    created: int,
    model: str,
    prompt_text: str,
    started: float,
) -> AsyncGenerator[bytes, None]:
    seq = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal seq
        data = {"type": kind, "sequence_number": seq, **fields}
        seq += 1
        return (
            f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()
        )

    def snapshot(
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        finish: str | None = None,
    ) -> dict[str, Any]:
        return _response(
            params,
            rid=rid,
            created=created,
            model=model,
            status=status,
            output=output,
            usage=usage,
            finish=finish,
        )

    yield event("response.created", response=snapshot("in_progress", []))
    yield event("response.in_progress", response=snapshot("in_progress", []))
    yield event("response.output_item.added", output_index=0, item=_message(msg_id, "", "in_progress"))
    part = {"type": "output_text", "text": "", "annotations": []}
    yield event("response.content_part.added", item_id=msg_id, output_index=0, content_index=0, part=part)
    result = RunResult()
    first = True
    while True:
        item = await fanout.next(st.keepalive_s)
        if item is None:
            yield keepalive()
            continue
        _, value = item
        if isinstance(value, Exception):
            err = describe(value)
            st.metrics.observe_error(err.code)
            st.note_failure(value)
            log.warning("response %s failed mid-way: %s", rid, redact(err.message))
            body = err.body()["error"]
            yield event("error", code=body["code"], message=body["message"], param=body["param"])
            failed = snapshot("failed", [])
            failed["error"] = {"code": body["code"] or "server_error", "message": body["message"]}
            yield event("response.failed", response=failed)
            return
        if isinstance(value, End):
            break
        result.feed(value)
        if isinstance(value, TransportInfo) and value.model:
            model = value.model  # the routed model, if it came after the stream started
        if isinstance(value, TextDelta) and not value.notice and value.text:
            if first:
                first = False
                st.metrics.observe_ttft("responses", time.perf_counter() - started)
            yield event(
                "response.output_text.delta",
                item_id=msg_id,
                output_index=0,
                content_index=0,
                delta=value.text,
                logprobs=[],
            )
    text = "".join(result.text)
    yield event(
        "response.output_text.done", item_id=msg_id, output_index=0, content_index=0, text=text, logprobs=[]
    )
    done_part = {"type": "output_text", "text": text, "annotations": []}
    yield event("response.content_part.done", item_id=msg_id, output_index=0, content_index=0, part=done_part)
    item_done = _message(msg_id, text, "completed")
    yield event("response.output_item.done", output_index=0, item=item_done)
    output = [item_done]
    # Function calls follow the message item once the run ended (only then is each known valid):
    # added (arguments "") -> arguments delta -> arguments done -> item done, as OpenAI streams them.
    for call in _function_calls(result, params, "completed"):
        index = len(output)
        yield event(
            "response.output_item.added",
            output_index=index,
            item={**call, "status": "in_progress", "arguments": ""},
        )
        yield event(
            "response.function_call_arguments.delta",
            item_id=call["id"],
            output_index=index,
            delta=call["arguments"],
        )
        yield event(
            "response.function_call_arguments.done",
            item_id=call["id"],
            output_index=index,
            arguments=call["arguments"],
        )
        yield event("response.output_item.done", output_index=index, item=call)
        output.append(call)
    usage = total_usage([result], prompt_text)
    st.metrics.observe_tokens(usage.input_tokens, usage.output_tokens, usage.reasoning_tokens)
    final = snapshot("completed", output, _usage(usage), result.finish)
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield event(kind, response=final)
