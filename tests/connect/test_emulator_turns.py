"""The emulator driven by the raw minimal clients (cursorpipe.testing.emulator.raw): RunSSE +
BidiAppend on httpx and the full-duplex Run over h2c, decoding everything it sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from cursorpipe._codecs.connect import EnvelopeDecoder, encode_envelope
from cursorpipe._proto.agent.v1 import agent_pb2
from cursorpipe._proto.aiserver.v1 import aiserver_pb2
from cursorpipe.testing.emulator import Behaviour, Emulator, Usage, estimate_tokens, expected_reply
from cursorpipe.testing.emulator.raw import (
    build_run_request,
    exchange_token,
    raw_turn_h2,
    raw_turn_sse,
)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as e:
        yield e


def _cases(turn: object) -> list[str]:
    out = []
    for m in turn.server_messages:  # type: ignore[attr-defined]
        case = m.WhichOneof("message")
        if case == "interaction_update":
            case = m.interaction_update.WhichOneof("message")
        out.append(case)
    return out


@pytest.mark.parametrize("raw_turn", [raw_turn_sse, raw_turn_h2], ids=["runsse", "run-h2c"])
async def test_turn_sequence_is_cursors(emu: Emulator, raw_turn: object) -> None:
    turn = await raw_turn(emu.url, emu.api_key, "hello")  # type: ignore[operator]
    assert turn.text == expected_reply("hello")
    assert turn.thinking == "Thinking about the question."
    assert turn.turn_ended and turn.end is not None and turn.end.error is None
    cases = _cases(turn)
    # set_blob (system prompt), request-context exec, deltas, checkpoint, turn_ended, then the
    # post-turn set_blob (turn) and the final checkpoint before the end-stream (live-dialect.md row 10)
    assert cases[0] == "kv_server_message"
    assert cases[1] == "exec_server_message"
    assert cases.index("thinking_delta") < cases.index("thinking_completed") < cases.index("text_delta")
    assert "token_delta" in cases and "heartbeat" in cases and "step_started" in cases
    assert cases[-4:] == [
        "conversation_checkpoint_update",
        "turn_ended",
        "kv_server_message",
        "conversation_checkpoint_update",
    ]
    post = turn.server_messages[-2].kv_server_message.set_blob_args
    assert list(turn.checkpoint.turns) == [post.blob_id]  # the checkpoint names the post-turn blob
    first = turn.server_messages[0].kv_server_message.set_blob_args
    assert json.loads(first.blob_data)["role"] == "system"
    # usage is computed from the texts the emulator really saw
    run = emu.runs[-1]
    assert run.outcome == "completed"
    assert turn.usage == run.usage
    assert turn.usage["output_tokens"] == estimate_tokens(turn.text) + estimate_tokens(turn.thinking)
    assert turn.usage["reasoning_tokens"] == estimate_tokens(turn.thinking)
    # every request-context exec was answered with a result then stream_close
    kinds = [
        m.WhichOneof("message") if m.WhichOneof("message") != "exec_client_control_message"
        else m.exec_client_control_message.WhichOneof("message")
        for m in run.exec_answers
    ]  # fmt: skip
    assert kinds == ["exec_client_message", "stream_close"]


@pytest.mark.parametrize("raw_turn", [raw_turn_sse, raw_turn_h2], ids=["runsse", "run-h2c"])
async def test_multi_turn_history_comes_from_client_held_blobs(emu: Emulator, raw_turn: object) -> None:
    blobs: dict[bytes, bytes] = {}
    t1 = await raw_turn(emu.url, emu.api_key, "one", blobs=blobs)  # type: ignore[operator]
    assert t1.checkpoint is not None and len(t1.checkpoint.turns) == 1
    t2 = await raw_turn(emu.url, emu.api_key, "two", blobs=blobs, checkpoint=t1.checkpoint)  # type: ignore[operator]
    assert t2.text == expected_reply("two", earlier=2, first="one", turns=1)
    t3 = await raw_turn(emu.url, emu.api_key, "three", blobs=blobs, checkpoint=t2.checkpoint)  # type: ignore[operator]
    assert t3.text == expected_reply("three", earlier=4, first="one", turns=2)
    assert t3.checkpoint is not None and len(t3.checkpoint.turns) == 3
    # the emulator fetched the echoed roots (its own system blob) and the earlier turns with
    # get_blob from the client's store
    gets = [
        m.kv_server_message.get_blob_args.blob_id
        for m in t3.server_messages
        if m.WhichOneof("message") == "kv_server_message" and m.kv_server_message.HasField("get_blob_args")
    ]
    assert gets == [*t2.checkpoint.root_prompt_messages_json, *t2.checkpoint.turns]  # type: ignore[union-attr]
    assert emu.runs[-1].history == (
        ("user", "one"),
        ("assistant", t1.text),
        ("user", "two"),
        ("assistant", t2.text),
    )


async def test_missing_blob_in_client_store_is_blob_not_found(emu: Emulator) -> None:
    """live-dialect.md row 4: a blob id the client cannot serve ends the run."""
    t1 = await raw_turn_sse(emu.url, emu.api_key, "one")
    t2 = await raw_turn_sse(emu.url, emu.api_key, "two", blobs={}, checkpoint=t1.checkpoint)
    assert t2.end is not None and t2.end.error is not None
    assert (t2.end.error.code, t2.end.error.message) == ("internal", "Blob not found")
    assert not t2.turn_ended


def _old_history(msg: agent_pb2.AgentClientMessage) -> None:
    hist = msg.run_request.action.user_message_action.conversation_history
    for role, text in (("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")):
        m = hist.messages.add()
        part = getattr(m, role).content.add()
        part.text.text = text


async def test_conversation_history_is_ignored_by_default(emu: Emulator) -> None:
    """live-dialect.md row 3: the live service builds the prompt from the root prompt messages; a
    transcript in conversation_history is lost."""
    turn = await raw_turn_sse(emu.url, emu.api_key, "e", mutate_first=_old_history)
    assert turn.text == expected_reply("e")
    assert emu.runs[-1].history == ()


async def test_the_same_history_in_root_prompt_messages_is_seen(emu: Emulator) -> None:
    messages = [
        {"role": r, "content": t}
        for r, t in (("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    ]
    turn = await raw_turn_sse(emu.url, emu.api_key, "e", prompt_messages=messages)
    assert turn.text == expected_reply("e", earlier=4, first="a")
    assert emu.runs[-1].history == (("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))


async def test_permissive_switch_reads_conversation_history_and_custom_system_prompt() -> None:
    def mutate(msg: agent_pb2.AgentClientMessage) -> None:
        msg.run_request.custom_system_prompt = "Be terse."
        _old_history(msg)

    async with Emulator(Behaviour.permissive()) as emu:
        turn = await raw_turn_sse(emu.url, emu.api_key, "e", mutate_first=mutate)
    assert turn.text == expected_reply("e", earlier=4, first="a", system="Be terse.")
    assert emu.runs[-1].system_prompt == "Be terse."
    assert emu.runs[-1].history[:2] == (("user", "a"), ("assistant", "b"))


async def test_scripted_reply_thinking_usage_and_chunks() -> None:
    behaviour = Behaviour(
        reply=lambda ctx: f"{ctx.model}:{ctx.text.upper()}",
        thinking="",
        chunks=3,
        usage=Usage(input_tokens=111, output_tokens=22, cache_read_tokens=5),
    )
    async with Emulator(behaviour) as emu:
        turn = await raw_turn_sse(emu.url, emu.api_key, "abcdef", model="gpt-5")
    assert turn.text == "gpt-5:ABCDEF" and turn.thinking == ""
    deltas = [m for m in turn.server_messages if m.interaction_update.WhichOneof("message") == "text_delta"]
    assert len(deltas) == 3
    assert turn.usage["input_tokens"] == 111 and turn.usage["output_tokens"] == 22
    assert turn.usage["cache_read_tokens"] == 5
    te = next(m for m in turn.server_messages if m.interaction_update.WhichOneof("message") == "turn_ended")
    assert te.interaction_update.turn_ended.estimated_cost.charged_cents > 0


async def test_gzip_frames_decode(emu: Emulator) -> None:
    emu.behaviour.gzip_frames = True
    t1 = await raw_turn_sse(emu.url, emu.api_key, "zip")
    t2 = await raw_turn_h2(emu.url, emu.api_key, "zip2")
    assert t1.text == expected_reply("zip") and t2.text == expected_reply("zip2")
    assert t1.gzip_frames == len(t1.server_messages) > 5
    assert t2.gzip_frames == len(t2.server_messages)


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        ("web_search", "approved"),
        ("web_fetch", "approved"),
        ("ask_question", "rejected"),
        ("switch_mode", "rejected"),
        ("create_plan", "error"),
        ("unknown", "answered"),
    ],
)
async def test_interaction_query_must_be_answered(emu: Emulator, kind: str, outcome: str) -> None:
    """live-dialect.md row 12: the raw client approves web search/fetch, rejects the rest and
    answers an unknown case under its own field number; the model states what it got."""
    emu.behaviour.interaction_query = kind
    turn = await raw_turn_sse(emu.url, emu.api_key, "q")
    assert turn.text == expected_reply("q", queries=[(kind, outcome)])
    queries = [
        m.interaction_query for m in turn.server_messages if m.WhichOneof("message") == "interaction_query"
    ]
    assert len(queries) == 1 and queries[0].id == 0
    (resp,) = emu.runs[-1].interaction_responses
    assert resp.id == 0
    assert emu.runs[-1].query_outcomes == [(kind, outcome)]


async def test_several_queries_in_order_and_web_search_declined(emu: Emulator) -> None:
    emu.behaviour.interaction_query = ["web_search", "ask_question"]
    turn = await raw_turn_h2(emu.url, emu.api_key, "q", approve_web=False)
    assert turn.text == expected_reply(
        "q", queries=[("web_search", "rejected"), ("ask_question", "rejected")]
    )
    assert [r.id for r in emu.runs[-1].interaction_responses] == [0, 1]


async def test_an_answer_under_another_field_number_ends_the_turn(emu: Emulator) -> None:
    emu.behaviour.interaction_query = "web_search"

    def wrong(q: agent_pb2.InteractionQuery) -> agent_pb2.InteractionResponse:
        resp = agent_pb2.InteractionResponse(id=q.id)
        resp.ask_question_interaction_response.result.rejected.reason = "no"
        return resp

    turn = await raw_turn_h2(emu.url, emu.api_key, "q", query_answer=wrong)
    assert turn.end is not None and turn.end.error is not None
    assert turn.end.error.code == "invalid_argument" and "web_search" in turn.end.error.message
    assert not turn.turn_ended


async def test_extra_exec_and_blob_round_trip_are_recorded(emu: Emulator) -> None:
    emu.behaviour.extra_exec = {"name": "lookup", "args": {"q": "x"}}
    emu.behaviour.blob_round_trip = True
    turn = await raw_turn_h2(emu.url, emu.api_key, "tools?")
    assert turn.text == expected_reply("tools?")
    run = emu.runs[-1]
    assert run.blob_round_trip_ok is True
    mcp = [m.exec_server_message for m in turn.server_messages if m.exec_server_message.HasField("mcp_args")]
    assert mcp and mcp[0].mcp_args.name == "lookup" and mcp[0].mcp_args.args["q"].string_value == "x"
    throws = [
        m for m in run.exec_answers
        if m.exec_client_control_message.WhichOneof("message") == "throw"
        and m.exec_client_control_message.throw.id == mcp[0].id
    ]  # fmt: skip
    assert len(throws) == 1


async def test_early_appends_are_buffered_and_reordered(emu: Emulator) -> None:
    """Appends before RunSSE and out of seqno order (official-sdk-as-peer.md §2, §2.3)."""
    async with httpx.AsyncClient(timeout=10) as client:
        token = await exchange_token(client, emu.url, emu.api_key)
        rid = "req-early"
        headers = {"authorization": f"Bearer {token}", "content-type": "application/proto"}
        hb = agent_pb2.AgentClientMessage()
        hb.client_heartbeat.SetInParent()
        first = build_run_request("early", run_id=rid)

        async def append(msg: agent_pb2.AgentClientMessage, seq: int) -> None:
            body = aiserver_pb2.BidiAppendRequest(
                data=msg.SerializeToString().hex(),
                request_id=aiserver_pb2.BidiRequestId(request_id=rid),
                append_seqno=seq,
            ).SerializeToString()
            r = await client.post(
                f"{emu.url}/aiserver.v1.BidiService/BidiAppend", content=body, headers=headers
            )
            assert r.status_code == 200 and r.content == b""

        await append(hb, 1)  # seqno 1 before seqno 0, both before the RunSSE exists
        await append(first, 0)
        await append(first, 0)  # a retried duplicate is dropped
        frames = []
        async with client.stream(
            "POST",
            f"{emu.url}/agent.v1.AgentService/RunSSE",
            content=encode_envelope(aiserver_pb2.BidiRequestId(request_id=rid).SerializeToString()),
            headers={**headers, "content-type": "application/connect+proto"},
        ) as resp:
            assert resp.headers["content-type"] == "application/connect+proto"
            dec = EnvelopeDecoder()
            async for chunk in resp.aiter_raw():
                frames += dec.feed(chunk)
                if frames and frames[0].payload:
                    break  # the turn started: the buffered run_request was delivered
    run = emu.runs[-1]
    assert (
        run.run_request is not None
        and run.run_request.action.user_message_action.user_message.text == "early"
    )
    assert run.client_heartbeats == 1
    assert [m.WhichOneof("message") for m in run.client_messages[:2]] == ["run_request", "client_heartbeat"]


async def test_cancel_action_ends_the_turn(emu: Emulator) -> None:
    emu.behaviour.first_token_delay_s = 5.0
    cancel = agent_pb2.AgentClientMessage()
    cancel.conversation_action.cancel_action.reason = "user pressed stop"
    turn = await asyncio.wait_for(
        raw_turn_h2(emu.url, emu.api_key, "stop me", extra_messages=[cancel]), timeout=4.0
    )
    assert emu.runs[-1].outcome == "cancelled"
    assert turn.end is not None and turn.end.error is None
    assert turn.text == ""


async def test_server_heartbeats_while_waiting(emu: Emulator) -> None:
    emu.behaviour.heartbeats = 0
    emu.behaviour.first_token_delay_s = 0.35
    emu.behaviour.heartbeat_interval_s = 0.1
    turn = await raw_turn_sse(emu.url, emu.api_key, "slow")
    assert _cases(turn).count("heartbeat") >= 2
    assert turn.text == expected_reply("slow")


async def test_routed_model_for_auto(emu: Emulator) -> None:
    turn = await raw_turn_sse(emu.url, emu.api_key, "route", model="auto")
    routed = [m for m in turn.server_messages if m.interaction_update.WhichOneof("message") == "routed_model"]
    assert routed[0].interaction_update.routed_model.display_name == "Composer 2"
    turn = await raw_turn_sse(emu.url, emu.api_key, "route", model="composer-2")
    assert "routed_model" not in _cases(turn)


async def test_runsse_may_be_labelled_event_stream(emu: Emulator) -> None:
    emu.behaviour.runsse_content_type = "text/event-stream"
    turn = await raw_turn_sse(emu.url, emu.api_key, "sse")
    assert turn.text == expected_reply("sse")


async def test_malformed_run_request_stream_is_invalid_argument(emu: Emulator) -> None:
    import h2.config
    import h2.connection
    import h2.events

    async with httpx.AsyncClient() as client:
        token = await exchange_token(client, emu.url, emu.api_key)
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", f"127.0.0.1:{emu.port}"),
            (":path", "/agent.v1.AgentService/Run"),
            ("content-type", "application/connect+proto"),
            ("authorization", f"Bearer {token}"),
        ],
    )
    conn.send_data(1, b"\x80\x00\x00\x00\x00")  # a gRPC-Web trailer flag: not Connect
    writer.write(conn.data_to_send())
    body = b""
    ended = False
    try:
        while not ended:
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, "connection closed before the stream ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            writer.write(conn.data_to_send())
    finally:
        writer.close()
    (frame,) = EnvelopeDecoder().feed(body)
    assert frame.end_stream is not None and frame.end_stream.error is not None
    assert frame.end_stream.error.code == "invalid_argument"
    assert emu.runs[-1].outcome == "error:invalid_argument"
