"""``POST /v1/responses`` in OpenAI's Responses wire format (what current SDKs and agents try
first): text and function tools, streaming (typed ``response.*`` events) and not. Function calls
are output items (``function_call``); results come back as ``function_call_output`` input items.

The turn itself runs in the shared loop (``_turn.py``); this module only renders.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from .._fold import TurnAccumulator
from ..types import Event, TextDelta, TransportInfo, Usage
from ._errors import APIError
from ._json import dumps
from ._openai_chat import runnable_calls
from ._requests import ResponsesParams, parse_responses
from ._sse import KEEPALIVE, frame
from ._wire import WireFormat

__all__ = ["RESPONSES", "ResponsesRenderer"]


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


class ResponsesRenderer:
    """One Responses API request: a message output item, then the run's function calls."""

    keepalive = KEEPALIVE

    def __init__(self, params: ResponsesParams) -> None:
        self.params = params
        self.spec = params.spec()
        self._id = "resp_" + secrets.token_hex(12)
        self._msg_id = "msg_" + secrets.token_hex(12)
        self._created = int(time.time())
        self._model = ""
        self._seq = 0

    def _response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        finish: str | None = None,
    ) -> dict[str, Any]:
        params = self.params
        incomplete = {"reason": "max_output_tokens"} if finish == "length" else None
        return {
            "id": self._id,
            "object": "response",
            "created_at": self._created,
            "status": "incomplete" if incomplete and status == "completed" else status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": params.instructions,
            "max_output_tokens": params.max_output_tokens,
            "model": self._model,
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

    def _function_calls(self, run: TurnAccumulator) -> list[dict[str, Any]]:
        """``function_call`` output items for the run's valid calls (only the first with
        ``parallel_tool_calls: false``; invalid calls are not returned, as on chat completions)."""
        return [
            {
                "id": "fc_" + secrets.token_hex(12),
                "type": "function_call",
                "status": "completed",
                "call_id": e.call.id,
                "name": e.call.name,
                "arguments": e.call.arguments,
            }
            for e in runnable_calls(run, self.params.parallel_tool_calls)
        ]

    # -- streaming ---------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return frame(dumps(data), kind.encode())

    def _text_event(self, kind: str, **fields: Any) -> bytes:
        return self._event(kind, item_id=self._msg_id, output_index=0, content_index=0, **fields)

    def open(self, model: str) -> bytes:
        self._model = model
        part = {"type": "output_text", "text": "", "annotations": []}
        return b"".join(
            (
                self._event("response.created", response=self._response("in_progress", [])),
                self._event("response.in_progress", response=self._response("in_progress", [])),
                self._event(
                    "response.output_item.added",
                    output_index=0,
                    item=_message(self._msg_id, "", "in_progress"),
                ),
                self._text_event("response.content_part.added", part=part),
            )
        )

    def event(self, index: int, event: Event, run: TurnAccumulator) -> bytes:
        if type(event) is TextDelta:
            if event.notice or not event.text:
                return b""
            return self._text_event("response.output_text.delta", delta=event.text, logprobs=[])
        if type(event) is TransportInfo and event.model:
            self._model = event.model  # the routed model, if it came after the stream started
        return b""

    def run_end(self, index: int, run: TurnAccumulator) -> bytes:
        return b""

    def close(self, runs: Sequence[TurnAccumulator], usage: Usage) -> bytes:
        run = runs[0]
        text = run.text
        done_part = {"type": "output_text", "text": text, "annotations": []}
        item_done = _message(self._msg_id, text, "completed")
        out = [
            self._text_event("response.output_text.done", text=text, logprobs=[]),
            self._text_event("response.content_part.done", part=done_part),
            self._event("response.output_item.done", output_index=0, item=item_done),
        ]
        output = [item_done]
        # Function calls follow the message item once the run ended (only then is each known
        # valid): added (arguments "") -> arguments delta -> arguments done -> item done, as
        # OpenAI streams them.
        for call in self._function_calls(run):
            index = len(output)
            added = {**call, "status": "in_progress", "arguments": ""}
            args = call["arguments"]
            out += [
                self._event("response.output_item.added", output_index=index, item=added),
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=call["id"],
                    output_index=index,
                    delta=args,
                ),
                self._event(
                    "response.function_call_arguments.done",
                    item_id=call["id"],
                    output_index=index,
                    arguments=args,
                ),
                self._event("response.output_item.done", output_index=index, item=call),
            ]
            output.append(call)
        final = self._response("completed", output, _usage(usage), run.stop_reason)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, response=final))
        return b"".join(out)

    def fail(self, err: APIError) -> bytes:
        body = err.body()["error"]
        failed = self._response("failed", [])
        failed["error"] = {"code": body["code"] or "server_error", "message": body["message"]}
        return self._event(
            "error", code=body["code"], message=body["message"], param=body["param"]
        ) + self._event("response.failed", response=failed)

    # -- not streaming -----------------------------------------------------------------------
    def body(
        self, runs: Sequence[TurnAccumulator], usage: Usage, model: str
    ) -> tuple[dict[str, Any], dict[str, str]]:
        self._model = model
        run = runs[0]
        text = run.text
        calls = self._function_calls(run)
        output = [_message(self._msg_id, text, "completed")] if text or not calls else []
        output += calls
        return self._response("completed", output, _usage(usage), run.stop_reason), {}


#: ``/v1/responses`` (no sessions: the conversation is sent whole).
RESPONSES = WireFormat(
    "responses", False, lambda body, strict: ResponsesRenderer(parse_responses(body, strict=strict))
)
