"""A faithful emulator of Cursor's cloud API for offline tests (distribution ``cursorpipe-testing``).

A real Connect server on loopback (Hypercorn: HTTP/1.1 and h2c prior knowledge on one port) serving
what Cursor's own client uses (connect.md, official-sdk-as-peer.md): ``POST
/auth/exchange_user_api_key`` (issues expiring JWT-shaped tokens), ``GET /v1/models`` (raw API key),
the ``GetUsableModels``/``GetDefaultModelForCli`` RPCs (``agent.v1.AgentService`` and
``aiserver.v1.AiService``, proto and JSON), ``GetServerConfig``, ``GetUserPrivacyMode``,
``AgentService/RunSSE`` + ``BidiService/BidiAppend`` and the full-duplex ``AgentService/Run``. Every
other path answers 404 ``{"code": "unimplemented"}``.

Each turn runs as Cursor runs it: system-prompt blob stored in the client's KV store, the prompt
messages and earlier turns fetched back from it (multi-turn state is client-held), the
request-context exec, ``mcp_state_exec_args`` when tools are offered, optional interaction queries,
thinking and text deltas, token deltas, a checkpoint, ``turn_ended`` with usage, the post-turn
``set_blob`` and final checkpoint, and the end-stream frame. Cursor's official SDK completes turns
against it (the conformance tests).

Strict by default (issue 11, docs/live-dialect.md rows 1-24): the emulated model sees only what the
live service reads: ``root_prompt_messages_json`` blobs (a missing one ends the run with ``internal:
Blob not found``), the checkpoint's turns, the request-context reply's global rules and
``cloud_rule``, and the user message; never ``conversation_history``. It refuses
``custom_system_prompt`` from non-SDK clients, outdated ``cli`` versions, ``exclude_workspace_context``
and malformed tool-call ids; tools reach the model only through the allowed-tools header, a non-ASK
mode and a connected MCP server. Each rule has a :class:`Behaviour` switch
(``Behaviour.permissive()`` relaxes them all). The default reply states what the model saw, so tests
compute it with :func:`expected_reply` (or :func:`reply_for` for a :class:`ReplyContext`). A
request whose system text asks for JSON (cursorpipe's ``response_format`` instruction) is answered
with JSON instead: a valid instance of the JSON Schema (:func:`schema_instance`, filled from the
user message where it names a property), or ``{"answer": <the default reply>}`` in plain JSON mode::

    expected_reply("three", earlier=4, first="one", system="Be brief.")

    from cursorpipe.testing.emulator import Behaviour, Emulator, Fault, expected_reply

    async with Emulator(Behaviour(chunks=3)) as emu:
        ...  # point a client at emu.url with emu.api_key
        emu.inject(Fault.RATE_LIMIT)        # the next run fails with a rate-limit error

    with Emulator.start_in_thread() as emu:  # sync code, notebooks
        ...

    python -m cursorpipe.testing.emulator --host 127.0.0.1 --port 8765

Tool calling (issue 7) through Cursor's MCP exec channel. When the model can see tools (offered in
``AgentRunRequest.mcp_tools`` or the request-context reply, allowed by the header and the mode, listed
by a connected server in the ``mcp_state_exec_args`` answer; build them with
:func:`mcp_tool_definition`, which fills them as Cursor's official SDK fills its custom tools:
provider ``custom-user-tools``), the emulated model calls them: as scripted by
``Behaviour.tool_calls`` (a list of :class:`ToolCallScript` = one round of parallel calls; a callable
``(ToolContext) -> list[ToolCallScript]`` asked before every round;
:func:`tool_rounds` for fixed multi-round scripts), else by the default rule
:func:`default_tool_calls` (a tool named in the user text, "use the tool NAME", a word of the tool's
name, or an instruction such as ``tool_choice: required``; arguments from
:func:`default_tool_arguments`). Each call streams ``partial_tool_call`` updates (``args_text_delta``
spells the arguments' JSON), ``tool_call_started``, then ``exec_server_message{id, mcp_args{name,
tool_name, provider_identifier, tool_call_id, args}}``; the emulator waits (bounded by
``Behaviour.tool_result_timeout_s``, restarted by exec heartbeats) for ``exec_client_message{id,
mcp_result}`` (or ``throw``) plus ``stream_close{id}``, sends ``tool_call_completed`` with the result
and answers with text that depends on it: :func:`expected_tool_reply` / :func:`expected_tools_reply`
over the results as :func:`mcp_result_text` renders them. A lost result aborts the exec and ends the
turn with Connect ``deadline_exceeded``. The schema has no ``tool_choice`` field, so tool choice is
honoured only through the prompt. A stateless request whose prompt messages end in the model's tool
calls and their results (``tool-call`` / ``tool-result`` parts, see :func:`parse_prompt_message`),
with an empty user message or one repeating the last user message, gets the result-dependent answer
directly (with ``Behaviour.read_conversation_history``, also from ``trailing_conversation_history``
or the end of ``conversation_history``: :func:`history_user`, :func:`history_assistant_tool_calls`,
:func:`history_tool_result` build those).
``Behaviour.meta_tool_discovery`` adds the updates of Cursor's MCP meta-tool discovery (not the
caller's tool calls). ``RunRecord.tools_offered``,
``.tool_calls`` (:class:`ToolCallRecord`) and ``.tool_results`` (:class:`ToolResult`) record it all::

    behaviour = Behaviour(tool_calls=[ToolCallScript("get_weather", {"city": "Oslo"})])
    ...
    assert turn.text == expected_tool_reply("get_weather", "sunny")
"""

from __future__ import annotations

from ._app import RecordedRequest
from ._behaviour import (
    DEFAULT_MODELS,
    DEFAULT_THINKING,
    Behaviour,
    Fault,
    ModelSpec,
    ReplyContext,
    Usage,
    estimate_tokens,
    expected_reply,
    reply_for,
)
from ._schema import schema_instance
from ._server import DEFAULT_API_KEY, Emulator
from ._tools import (
    CUSTOM_TOOLS_PROVIDER,
    ToolCallRecord,
    ToolCallScript,
    ToolContext,
    ToolResult,
    default_tool_arguments,
    default_tool_calls,
    expected_tool_reply,
    expected_tools_reply,
    history_assistant_tool_calls,
    history_tool_result,
    history_user,
    mcp_result_text,
    mcp_tool_definition,
    tool_rounds,
)
from ._turn import RunRecord
from ._view import DEFAULT_MIN_CLI_VERSION, MCP_TOOL_FAMILY, PromptMessage, parse_prompt_message

__all__ = [
    "CUSTOM_TOOLS_PROVIDER",
    "DEFAULT_API_KEY",
    "DEFAULT_MIN_CLI_VERSION",
    "DEFAULT_MODELS",
    "DEFAULT_THINKING",
    "MCP_TOOL_FAMILY",
    "Behaviour",
    "Emulator",
    "Fault",
    "ModelSpec",
    "PromptMessage",
    "RecordedRequest",
    "ReplyContext",
    "RunRecord",
    "ToolCallRecord",
    "ToolCallScript",
    "ToolContext",
    "ToolResult",
    "Usage",
    "default_tool_arguments",
    "default_tool_calls",
    "estimate_tokens",
    "expected_reply",
    "expected_tool_reply",
    "expected_tools_reply",
    "history_assistant_tool_calls",
    "history_tool_result",
    "history_user",
    "mcp_result_text",
    "mcp_tool_definition",
    "parse_prompt_message",
    "reply_for",
    "schema_instance",
    "tool_rounds",
]
