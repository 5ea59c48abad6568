"""Model resolution, effort, sibling slugs (live-dialect.md row 14), HTTP 429 without a Connect
body (row 18), retries that keep the run id (row 17) and enveloped unary responses (row 23)."""

from __future__ import annotations

import gzip

import httpx
import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe._codecs.connect import (
    ConnectError,
    decode_unary_body,
    encode_end_stream,
    encode_envelope,
    parse_unary_error,
)
from cursorpipe._proto.agent.v1 import agent_pb2 as pb
from cursorpipe.errors import ConfigurationError, ModelNotFoundError, ProtocolError, RateLimitError
from cursorpipe.testing.emulator import Behaviour, Emulator, Fault, ModelSpec, expected_reply
from cursorpipe.testing.emulator.raw import exchange_token, raw_turn_sse
from cursorpipe.transports.connect._errors import map_connect_error
from cursorpipe.transports.connect._models import choose_model, parse_rest_models, parse_usable_models


def _requested(emu: Emulator) -> tuple[str, dict[str, str]]:
    req = emu.runs[-1].run_request
    assert req is not None
    model = req.requested_model
    return model.model_id, {p.id: p.value for p in model.parameters}


def _catalogue() -> list:
    usable = pb.GetUsableModelsResponse(
        models=[
            pb.ModelDetails(model_id="gpt-5.2", display_name="GPT-5.2"),
            pb.ModelDetails(model_id="gpt-5.2-low", display_name="GPT-5.2 Low"),
            pb.ModelDetails(model_id="gpt-5.2-high", display_name="GPT-5.2 High"),
            pb.ModelDetails(model_id="grok-4.6-medium"),
            pb.ModelDetails(model_id="grok-4.6-high"),
            pb.ModelDetails(model_id="solo-high"),  # a name that merely ends in an effort word
            pb.ModelDetails(model_id="composer-2", aliases=["composer"]),
        ]
    )
    return parse_usable_models(usable)


# -- resolution (sans IO) ------------------------------------------------------------------------


def test_usable_models_fold_sibling_slugs_into_families() -> None:
    models = _catalogue()
    assert [m.id for m in models] == ["gpt-5.2", "grok-4.6", "solo-high", "composer-2"]
    gpt = models[0]
    assert gpt.display_name == "GPT-5.2" and set(gpt.aliases) >= {"gpt-5.2-low", "gpt-5.2-high"}
    assert gpt.parameters[0]["id"] == "reasoning"  # [G] GPT models key effort as `reasoning`
    assert models[1].parameters[0]["id"] == "effort"


@pytest.mark.parametrize(
    ("name", "effort", "model_id", "params"),
    [
        ("gpt-5.2-high", None, "gpt-5.2", (("reasoning", "high"),)),  # never the sibling slug
        ("GPT-5.2-LOW", None, "gpt-5.2", (("reasoning", "low"),)),
        ("cursor-grok-4.6-medium", None, "grok-4.6", (("effort", "medium"),)),  # legacy slug
        ("gpt-5.2", "xhigh", "gpt-5.2", (("reasoning", "xhigh"),)),  # inferred values: sent as is
        ("gpt-5.2-high", "low", "gpt-5.2", (("reasoning", "high"),)),  # the slug's level wins
        ("solo-high", "high", "solo-high", ()),  # no effort parameter known: not invented
        ("composer", None, "composer-2", (("fast", "false"),)),  # bare composer is not Fast
        ("composer-2-fast", None, "composer-2", (("fast", "true"),)),
        ("composer-2[fast=true]", None, "composer-2", (("fast", "true"),)),
        ("auto", "high", "default", ()),
    ],
)
def test_choose_model_sends_what_run_accepts(
    name: str, effort: str | None, model_id: str, params: tuple[tuple[str, str], ...]
) -> None:
    choice = choose_model(name, _catalogue(), reasoning_effort=effort)
    assert choice is not None
    assert (choice.id, choice.parameters) == (model_id, params)


def test_effort_maps_to_the_nearest_declared_level() -> None:
    models = parse_rest_models(
        {
            "items": [
                {
                    "id": "gpt-5.2",
                    "parameters": [
                        {
                            "id": "reasoning",
                            "values": [{"value": "low"}, {"value": "medium"}, {"value": "high"}],
                        }
                    ],
                },
                {
                    "id": "claude",
                    "parameters": [{"id": "thinking", "values": [{"value": "true"}, {"value": "false"}]}],
                },
                {"id": "odd", "parameters": [{"id": "effort", "values": [{"value": "turbo"}]}]},
            ]
        }
    )

    def params(name: str, effort: str) -> tuple[tuple[str, str], ...]:
        choice = choose_model(name, models, reasoning_effort=effort)
        assert choice is not None
        return choice.parameters

    assert params("gpt-5.2", "medium") == (("reasoning", "medium"),)
    assert params("gpt-5.2", "xhigh") == (("reasoning", "high"),)
    assert params("gpt-5.2", "minimal") == (("reasoning", "low"),)
    assert params("claude", "high") == (("thinking", "true"),)
    assert params("claude", "minimal") == (("thinking", "false"),)
    with pytest.raises(ConfigurationError, match="turbo"):
        params("odd", "high")
    assert choose_model("gpt-5.2-ultra", models) is None  # not an effort word: unknown model


async def test_client_rejects_an_unknown_reasoning_effort() -> None:
    async with CursorClient(CursorPipeConfig(strategy="connect", api_key="crsr_unused_0000000000")) as client:
        with pytest.raises(ConfigurationError, match="reasoning_effort"):
            client.build_request("gpt-5.2", prompt="x", reasoning_effort="extreme")
        assert client.build_request("gpt-5.2", prompt="x", reasoning_effort="HIGH").reasoning_effort == "high"


# -- resolution against the emulator -------------------------------------------------------------


@pytest.mark.parametrize("catalogue", ["rest", "usable_models"])
async def test_sibling_slug_and_effort_reach_run_as_family_plus_parameter(catalogue: str) -> None:
    async with Emulator() as emu:
        if catalogue == "rest":
            config = CursorPipeConfig(
                strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0
            )
        else:  # a ready access token: no API key for REST, so GetUsableModels (with its siblings)
            async with httpx.AsyncClient() as http:
                token = await exchange_token(http, emu.url, emu.api_key)
            config = CursorPipeConfig(
                strategy="connect", backend_url=emu.url, auth_token=token, max_retries=0
            )
        async with CursorClient(config) as client:
            result = await client.complete("gpt-5.2-high", prompt="think hard")
            assert result.text == expected_reply("think hard")
            assert _requested(emu) == ("gpt-5.2", {"reasoning": "high"})
            await client.complete("gpt-5.2", prompt="x", reasoning_effort="low")
            assert _requested(emu) == ("gpt-5.2", {"reasoning": "low"})
            await client.complete("composer-2", prompt="x")
            assert _requested(emu) == ("composer-2", {"fast": "false"})
            async with client.session("gpt-5.2") as session:
                await session.prompt("in a session", reasoning_effort="medium")
            assert _requested(emu) == ("gpt-5.2", {"reasoning": "medium"})
            with pytest.raises(ModelNotFoundError) as info:
                await client.complete("gpt-9", prompt="x")
            assert "gpt-5.2" in info.value.available and "gpt-5.2-high" not in info.value.available
        paths = {r.path.rsplit("/", 1)[-1] for r in emu.requests}
        assert ("GetUsableModels" in paths) == (catalogue == "usable_models")


async def test_emulator_rejects_sibling_slugs_with_a_bare_resource_exhausted() -> None:
    async with Emulator() as emu:
        turn = await raw_turn_sse(emu.url, emu.api_key, "x", model="gpt-5.2-high")
        assert turn.end is not None and turn.end.error is not None
        assert turn.end.error.code == "resource_exhausted" and not turn.end.error.details
        assert {k.lower(): v for k, v in turn.end.metadata.items()}.get("errorid") == ("528384",)
        assert not turn.turn_ended
        # The client's mapping of exactly that answer: the rejected model, not a rate limit.
        err = map_connect_error(
            turn.end.error, metadata=turn.end.metadata, model="gpt-5.2-high", available_models=emu.models
        )
        assert isinstance(err, ModelNotFoundError) and "gpt-5.2" in err.available
        assert "rate" not in str(err).lower().split("(")[0]
        # The rule bites only because it is on: switched off, the slug runs.
        emu.behaviour.reject_sibling_slugs = False
        assert (await raw_turn_sse(emu.url, emu.api_key, "x", model="gpt-5.2-high")).turn_ended


def test_bare_resource_exhausted_on_a_valid_model_stays_a_rate_limit() -> None:
    bare = ConnectError("resource_exhausted", "Error")
    ids = ["gpt-5.2", "composer-2"]
    assert isinstance(map_connect_error(bare, model="gpt-5.2", available_models=ids), RateLimitError)
    assert isinstance(
        map_connect_error(bare, model="auto", sent_model="default", available_models=ids), RateLimitError
    )
    err = map_connect_error(bare, model="fancy", sent_model="fancy-model", available_models=ids)
    assert isinstance(err, ModelNotFoundError) and err.available == sorted(ids)
    # With a Retry-After it is a rate limit whatever the model.
    limited = map_connect_error(bare, metadata={"retry-after": ["2"]}, model="gpt-9", available_models=ids)
    assert isinstance(limited, RateLimitError) and limited.retry_after == 2


# -- HTTP 429 without a Connect body (row 18) ----------------------------------------------------


def test_http_429_without_body_maps_to_rate_limit() -> None:
    error = parse_unary_error(429, b"<html>slow down</html>", "text/html")
    assert error.code == "unavailable"  # the SDK's status table, kept
    err = map_connect_error(error, metadata={"Retry-After": "7"})
    assert isinstance(err, RateLimitError) and err.retry_after == 7 and err.retryable
    assert "rate-limited" in str(err) and "unreachable" not in str(err)


@pytest.mark.parametrize("use_http2", ["never", "always"])
async def test_run_answered_429_without_body_is_a_rate_limit(use_http2: str) -> None:
    async with Emulator() as emu:
        config = CursorPipeConfig(
            strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0, use_http2=use_http2
        )
        async with CursorClient(config) as client:
            await client.list_models()
            emu.inject(Fault.HTTP_ERROR, status=429, retry_after=3)
            with pytest.raises(RateLimitError) as info:
                await client.complete("composer-2", prompt="x")
        assert info.value.retry_after == 3
        assert "rate-limited" in str(info.value) and "unreachable" not in str(info.value)


# -- retries keep the run id (row 17) ------------------------------------------------------------


@pytest.mark.parametrize("use_http2", ["never", "always"])
async def test_client_retry_keeps_run_id_and_changes_only_the_request_id(use_http2: str) -> None:
    async with Emulator() as emu:
        config = CursorPipeConfig(
            strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=2, use_http2=use_http2
        )
        async with CursorClient(config) as client:
            await client.list_models()
            emu.inject(Fault.HTTP_ERROR, status=429, retry_after=0)
            emu.inject(Fault.UNAVAILABLE)
            result = await client.complete("composer-2", prompt="retry me")
        assert result.text == expected_reply("retry me")
        runs = [r for r in emu.requests if r.path.endswith(("/Run", "/RunSSE"))]
        assert len(runs) == 3
        originals = {r.headers.get("x-original-request-id") for r in runs}
        request_ids = [r.headers.get("x-request-id") for r in runs]
        assert len(originals) == 1 and None not in originals
        assert len(set(request_ids)) == 3
        run_ids = {r.run_request.run_id for r in emu.runs if r.run_request is not None}
        assert run_ids == originals  # run_id == x-original-request-id on every attempt
        assert request_ids[0] in originals  # the first request's id is the run id (§4.2)


# -- unary responses, raw or enveloped (row 23) --------------------------------------------------


def test_decode_unary_body_accepts_raw_and_enveloped() -> None:
    msg = pb.GetUsableModelsResponse(models=[pb.ModelDetails(model_id="m")]).SerializeToString()
    assert decode_unary_body(msg) == msg
    assert decode_unary_body(b"") == b""
    assert decode_unary_body(encode_envelope(msg)) == msg
    assert decode_unary_body(encode_envelope(msg, flags=1)) == msg  # gzip'd by the encoder
    assert gzip.decompress(encode_envelope(msg, flags=1)[5:]) == msg
    assert decode_unary_body(encode_envelope(msg) + encode_end_stream(None)) == msg
    with pytest.raises(ProtocolError, match="permission_denied"):
        decode_unary_body(encode_end_stream(ConnectError("permission_denied", "no")))


async def test_client_reads_enveloped_unary_responses() -> None:
    async with Emulator(Behaviour(envelope_unary=True, advertise_http2=True)) as emu:
        async with httpx.AsyncClient() as http:
            token = await exchange_token(http, emu.url, emu.api_key)
            raw = await http.post(
                f"{emu.url}/agent.v1.AgentService/GetUsableModels",
                content=b"",
                headers={"authorization": f"Bearer {token}", "content-type": "application/proto"},
            )
        assert raw.content[:1] == b"\x00"  # the switch really envelopes
        config = CursorPipeConfig(strategy="connect", backend_url=emu.url, auth_token=token, max_retries=0)
        async with CursorClient(config) as client:
            models = await client.list_models()
            assert "gpt-5.2" in [m.id for m in models]
            assert await client.generate("gpt-5.2-high", "hi") == expected_reply("hi")
        # GetServerConfig was enveloped too, and its FORCE_ALL_ENABLED was understood: h2c Run.
        assert emu.runs[-1].transport == "run"


async def test_refused_slug_surfaces_as_model_not_found_through_the_client() -> None:
    """A lone per-effort slug cannot be folded into a family (its family is not listed), so it is
    sent as is; Run's bare resource_exhausted then reaches the caller as ModelNotFoundError naming
    the valid ids, not as a rate limit that a retry loop would wait out."""
    models = (ModelSpec("composer-2", "Composer 2"), ModelSpec("other", "Other", siblings=("solo-high",)))
    async with Emulator(Behaviour(models=models)) as emu:
        async with httpx.AsyncClient() as http:
            token = await exchange_token(http, emu.url, emu.api_key)
        config = CursorPipeConfig(strategy="connect", backend_url=emu.url, auth_token=token, max_retries=2)
        async with CursorClient(config) as client:
            with pytest.raises(ModelNotFoundError) as info:
                await client.complete("solo-high", prompt="x")
        assert "composer-2" in info.value.available
        assert len([r for r in emu.requests if r.path.endswith("/RunSSE")]) == 1  # not retried
