"""Golden bytes: every test vector of agent-v1-minimal.md §9 and the synthetic enveloped vectors of
connect.md §11, encoded with our generated protobuf classes and framed by our codec."""

from __future__ import annotations

import pytest
from cursorpipe._codecs.connect import EnvelopeDecoder, encode_end_stream, encode_envelope
from cursorpipe._proto.agent.v1 import agent_pb2
from cursorpipe._proto.aiserver.v1 import aiserver_pb2


def _run_request() -> agent_pb2.AgentClientMessage:
    m = agent_pb2.AgentClientMessage()
    r = m.run_request
    r.conversation_state.SetInParent()
    r.action.user_message_action.user_message.text = "hi"
    r.requested_model.model_id = "composer-2"
    r.mcp_tools.SetInParent()
    r.conversation_id = "00000000-0000-4000-8000-000000000001"
    r.run_id = "00000000-0000-4000-8000-000000000002"
    r.next_interaction_query_id = 0
    return m


def _heartbeat() -> agent_pb2.AgentClientMessage:
    m = agent_pb2.AgentClientMessage()
    m.client_heartbeat.SetInParent()
    return m


def _stream_close() -> agent_pb2.AgentClientMessage:
    m = agent_pb2.AgentClientMessage()
    m.exec_client_control_message.stream_close.id = 7
    return m


def _throw() -> agent_pb2.AgentClientMessage:
    m = agent_pb2.AgentClientMessage()
    m.exec_client_control_message.throw.id = 7
    m.exec_client_control_message.throw.error = "no"
    return m


def _kv_ack() -> agent_pb2.AgentClientMessage:
    m = agent_pb2.AgentClientMessage()
    m.kv_client_message.id = 3
    m.kv_client_message.set_blob_result.SetInParent()
    return m


def _request_context() -> agent_pb2.AgentClientMessage:
    m = agent_pb2.AgentClientMessage()
    m.exec_client_message.id = 1
    env = m.exec_client_message.request_context_result.success.request_context.env
    env.os_version = "linux 6.8.0"
    env.workspace_paths.append("/srv/w")
    env.shell = "/bin/bash"
    env.time_zone = "UTC"
    return m


def _bidi_request_id() -> aiserver_pb2.BidiRequestId:
    return aiserver_pb2.BidiRequestId(request_id="r1")


def _bidi_append() -> aiserver_pb2.BidiAppendRequest:
    return aiserver_pb2.BidiAppendRequest(
        data="3a00", request_id=aiserver_pb2.BidiRequestId(request_id="r1"), append_seqno=0
    )


def _text_delta() -> agent_pb2.AgentServerMessage:
    m = agent_pb2.AgentServerMessage()
    m.interaction_update.text_delta.text = "hi"
    return m


def _turn_ended() -> agent_pb2.AgentServerMessage:
    m = agent_pb2.AgentServerMessage()
    m.interaction_update.turn_ended.input_tokens = 10
    m.interaction_update.turn_ended.output_tokens = 5
    return m


# agent-v1-minimal.md §9, verbatim.
VECTORS = [
    (
        _run_request,
        "0a6c0a0012080a060a040a02686922002a2430303030303030302d303030302d343030302d383030302d30303030303030"
        "30303030314a0c0a0a636f6d706f7365722d32ca012430303030303030302d303030302d343030302d383030302d30303030"
        "3030303030303032900200",
    ),
    (_heartbeat, "3a00"),
    (_stream_close, "2a040a020807"),
    (_throw, "2a081206080712026e6f"),
    (_kv_ack, "1a0408031a00"),
    (
        _request_context,
        "122f0801522b0a290a2722250a0b6c696e757820362e382e3012062f7372762f771a092f62696e2f626173685203555443",
    ),
    (_bidi_request_id, "0a027231"),
    (_bidi_append, "0a043361303012040a027231"),
    (_text_delta, "0a060a040a026869"),
    (_turn_ended, "0a067204080a1005"),
]


@pytest.mark.parametrize(("build", "hexstr"), VECTORS, ids=[b.__name__.strip("_") for b, _ in VECTORS])
def test_payload_vectors_encode_byte_exact(build: object, hexstr: str) -> None:
    msg = build()  # type: ignore[operator]
    assert msg.SerializeToString().hex() == hexstr


@pytest.mark.parametrize(("build", "hexstr"), VECTORS, ids=[b.__name__.strip("_") for b, _ in VECTORS])
def test_payload_vectors_decode_to_the_same_message(build: object, hexstr: str) -> None:
    expected = build()  # type: ignore[operator]
    decoded = type(expected).FromString(bytes.fromhex(hexstr))
    assert decoded == expected
    assert decoded.SerializeToString() == bytes.fromhex(hexstr)


def test_run_request_vector_fields() -> None:
    m = agent_pb2.AgentClientMessage.FromString(bytes.fromhex(VECTORS[0][1]))
    assert m.WhichOneof("message") == "run_request"
    r = m.run_request
    assert r.HasField("conversation_state") and r.HasField("mcp_tools")
    assert r.action.user_message_action.user_message.text == "hi"
    assert r.HasField("next_interaction_query_id") and r.next_interaction_query_id == 0


# connect.md §11, "Synthetic enveloped vectors".
def test_synthetic_text_delta_envelope() -> None:
    wire = bytes.fromhex("00000000080a060a040a026869")
    assert encode_envelope(_text_delta().SerializeToString()) == wire
    (frame,) = EnvelopeDecoder().feed(wire)
    assert frame.flags == 0
    assert agent_pb2.AgentServerMessage.FromString(frame.payload).interaction_update.text_delta.text == "hi"


def test_synthetic_turn_ended_envelope() -> None:
    wire = bytes.fromhex("00000000040a027200")
    m = agent_pb2.AgentServerMessage()
    m.interaction_update.turn_ended.SetInParent()
    assert encode_envelope(m.SerializeToString()) == wire
    (frame,) = EnvelopeDecoder().feed(wire)
    decoded = agent_pb2.AgentServerMessage.FromString(frame.payload)
    assert decoded.interaction_update.WhichOneof("message") == "turn_ended"
    assert not decoded.interaction_update.turn_ended.HasField("input_tokens")


def test_synthetic_client_heartbeat_envelope() -> None:
    assert encode_envelope(_heartbeat().SerializeToString()) == bytes.fromhex("00000000023a00")


def test_synthetic_success_end_stream() -> None:
    wire = bytes.fromhex("02000000027b7d")
    assert encode_end_stream() == wire
    dec = EnvelopeDecoder()
    (frame,) = dec.feed(wire)
    assert frame.is_end_stream and frame.end_stream is not None
    assert frame.end_stream.error is None and dict(frame.end_stream.metadata) == {}
    assert dec.ended


def test_usage_fixture_all_fields_present() -> None:
    """connect.md §11 (EA synthetic fixture turn_ended_all_present.hex)."""
    m = agent_pb2.AgentServerMessage.FromString(bytes.fromhex("0a0c720a080a1014180320042805"))
    te = m.interaction_update.turn_ended
    assert (
        te.input_tokens,
        te.output_tokens,
        te.cache_read_tokens,
        te.cache_write_tokens,
        te.reasoning_tokens,
    ) == (10, 20, 3, 4, 5)


def test_get_server_config_http2_disabled_bytes() -> None:
    """connect.md §11: the DM capture `38 01` is http2_config = FORCE_ALL_DISABLED."""
    from cursorpipe._proto.aiserver.v1 import server_config_pb2 as sc

    resp = sc.GetServerConfigResponse.FromString(bytes.fromhex("3801"))
    assert resp.http2_config == sc.HTTP2_CONFIG_FORCE_ALL_DISABLED
