"""The error tree (issue 13): groups, the fallback branch, ``ErrorCode``, the timeout alias, and
pickling / ``str`` / ``repr`` of every error."""

from __future__ import annotations

import ast
import copy
import functools
import pickle
import re
from pathlib import Path

import cursorpipe
import pytest
from cursorpipe import errors
from cursorpipe.errors import (
    AgentTimeoutError,
    APIError,
    CallerError,
    CursorPipeError,
    ErrorCode,
    ModelNotFoundError,
    RequestTimeoutError,
    TransportError,
    TransportFailureError,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ROOT / "packages"
GROUPS = (TransportError, APIError, CallerError)

#: Every public error class (``AgentTimeoutError`` is an alias of ``RequestTimeoutError``).
PUBLIC_ERRORS = {
    name: getattr(cursorpipe, name)
    for name in cursorpipe.__all__
    if isinstance(getattr(cursorpipe, name), type) and issubclass(getattr(cursorpipe, name), BaseException)
}

#: The group each class sits in; the issue's grouping. ModelNotFoundError and OutdatedClientError
#: stay ConfigurationErrors (so CallerErrors): changing that would change their isinstance relations.
EXPECTED_GROUP = {
    "TransportError": TransportError,
    "NetworkError": TransportError,
    "StreamDroppedError": TransportError,
    "StreamStalledError": TransportError,
    "TransportFailureError": TransportError,
    "AgentNotFoundError": TransportError,
    "AgentStartupError": TransportError,
    "AgentCrashError": TransportError,
    "ProtocolError": TransportError,
    "APIError": APIError,
    "AuthenticationError": APIError,
    "PermissionDeniedError": APIError,
    "RateLimitError": APIError,
    "UsageLimitError": APIError,
    "SessionError": APIError,
    "CallerError": CallerError,
    "ConfigurationError": CallerError,
    "ModelNotFoundError": CallerError,
    "OutdatedClientError": CallerError,
    "StructuredOutputError": CallerError,
    "ToolLoopError": CallerError,
    "ToolResultTimeoutError": CallerError,
}
#: Above every group (the base) or across them (the timeout family: see errors.py's docstring).
UNGROUPED = {"CursorPipeError", "RequestTimeoutError", "AgentTimeoutError"}

#: The isinstance relations among the classes that existed before the groups (issue 13 step 5 may
#: only add bases): class -> every one of those classes (and builtins) it is a subclass of.
BEFORE_GROUPS: dict[str, set[str]] = {
    "AgentCrashError": {"CursorPipeError"},
    "AgentNotFoundError": {"CursorPipeError"},
    "AgentStartupError": {"AgentTimeoutError", "CursorPipeError", "TimeoutError"},
    "AgentTimeoutError": {"CursorPipeError", "TimeoutError"},
    "AuthenticationError": {"CursorPipeError"},
    "ConfigurationError": {"CursorPipeError", "ValueError"},
    "CursorPipeError": set(),
    "ModelNotFoundError": {"ConfigurationError", "CursorPipeError", "ValueError"},
    "NetworkError": {"CursorPipeError"},
    "OutdatedClientError": {"ConfigurationError", "CursorPipeError", "ValueError"},
    "PermissionDeniedError": {"AuthenticationError", "CursorPipeError"},
    "ProtocolError": {"CursorPipeError"},
    "RateLimitError": {"CursorPipeError"},
    "SessionError": {"CursorPipeError"},
    "StreamDroppedError": {"CursorPipeError", "NetworkError"},
    "StreamStalledError": {"AgentTimeoutError", "CursorPipeError", "TimeoutError"},
    "StructuredOutputError": {"CursorPipeError"},
    "ToolLoopError": {"CursorPipeError"},
    "ToolResultTimeoutError": {"AgentTimeoutError", "CursorPipeError", "TimeoutError"},
    "UsageLimitError": {"CursorPipeError", "RateLimitError"},
}

#: Today's defaults, unchanged by the tree: code and retryable of an error built from a message.
DEFAULTS = {
    "AgentCrashError": ("agent_crashed", True),
    "AgentNotFoundError": ("agent_not_found", False),
    "AgentStartupError": ("agent_startup_timeout", False),
    "AuthenticationError": ("authentication_error", False),
    "ConfigurationError": ("configuration_error", False),
    "CursorPipeError": ("cursorpipe_error", False),
    "NetworkError": ("network_error", True),
    "OutdatedClientError": ("outdated_client", False),
    "PermissionDeniedError": ("permission_denied", False),
    "ProtocolError": ("protocol_error", False),
    "RateLimitError": ("rate_limited", True),
    "RequestTimeoutError": ("timeout", False),
    "SessionError": ("session_error", False),
    "StreamDroppedError": ("stream_dropped", True),
    "StreamStalledError": ("stream_stalled", True),
    "StructuredOutputError": ("structured_output_invalid", False),
    "ToolLoopError": ("tool_rounds_exceeded", False),
    "ToolResultTimeoutError": ("tool_result_timeout", False),
    "UsageLimitError": ("usage_limit", False),
}

FALLBACK_WORTHY = {
    "TransportFailureError",
    "AgentNotFoundError",
    "AgentStartupError",
    "AgentCrashError",
    "ProtocolError",
}


def build(cls: type[CursorPipeError], message: str = "it failed", **kwargs: object) -> CursorPipeError:
    if cls is ModelNotFoundError:
        return ModelNotFoundError("gpt-nope", ["auto", "gpt-5.2"], **kwargs)
    return cls(message, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# the tree
# --------------------------------------------------------------------------------------------------
def test_every_public_error_is_placed() -> None:
    assert set(PUBLIC_ERRORS) == set(EXPECTED_GROUP) | UNGROUPED


@pytest.mark.parametrize("name", sorted(EXPECTED_GROUP))
def test_each_class_sits_in_exactly_one_group(name: str) -> None:
    cls = PUBLIC_ERRORS[name]
    assert [g for g in GROUPS if issubclass(cls, g)] == [EXPECTED_GROUP[name]]


def test_groups_are_disjoint_and_below_the_base() -> None:
    for group in GROUPS:
        assert issubclass(group, CursorPipeError)
        assert not any(issubclass(group, other) for other in GROUPS if other is not group)
    assert issubclass(TransportFailureError, TransportError)


def test_the_timeout_family_crosses_the_groups() -> None:
    # A bare RequestTimeoutError (a deadline) is in no group; each subclass is in exactly one.
    assert not any(issubclass(RequestTimeoutError, g) for g in GROUPS)
    assert issubclass(RequestTimeoutError, TimeoutError)
    subclasses = {
        n
        for n, c in PUBLIC_ERRORS.items()
        if c is not RequestTimeoutError and issubclass(c, RequestTimeoutError)
    }
    assert subclasses == {"AgentStartupError", "StreamStalledError", "ToolResultTimeoutError"}


@pytest.mark.parametrize("name", sorted(BEFORE_GROUPS))
def test_isinstance_relations_from_before_the_groups_hold(name: str) -> None:
    cls = PUBLIC_ERRORS[name]
    known = {n: PUBLIC_ERRORS[n] for n in BEFORE_GROUPS} | {
        "ValueError": ValueError,
        "TimeoutError": TimeoutError,
    }
    above = {n for n, other in known.items() if n != name and issubclass(cls, other)}
    assert above == BEFORE_GROUPS[name]


def _drawn_tree() -> dict[str, str | None]:
    """Class name -> its parent in the drawing in errors.py's docstring."""
    doc = errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in doc.splitlines():
        m = re.match(r"^    ((?:│   |    )*)(├── |└── )?([A-Z]\w+)\b", line)
        if m is None or (m.group(2) is None and m.group(3) != "CursorPipeError"):
            continue
        depth = 0 if m.group(2) is None else len(m.group(1)) // 4 + 1
        del stack[depth:]
        parents[m.group(3)] = stack[-1] if stack else None
        stack.append(m.group(3))
    return parents


def test_the_docstring_draws_the_real_tree() -> None:
    drawn = _drawn_tree()
    assert set(drawn) == set(PUBLIC_ERRORS) - {"AgentTimeoutError"}
    for name, parent in drawn.items():
        cls = PUBLIC_ERRORS[name]
        if parent is None:
            assert cls is CursorPipeError
        else:
            assert PUBLIC_ERRORS[parent] in cls.__bases__, (name, parent)


def test_the_readme_names_every_error_class() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Errors", 1)[1].split("\n### ", 1)[0]
    missing = [n for n in PUBLIC_ERRORS if n != "AgentTimeoutError" and f"`{n}`" not in section]
    assert missing == []
    assert "`ErrorCode`" in section


# --------------------------------------------------------------------------------------------------
# transport_failure: derived from the class
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(set(PUBLIC_ERRORS) - {"AgentTimeoutError"}))
def test_transport_failure_is_the_fallback_branch(name: str) -> None:
    err = build(PUBLIC_ERRORS[name])
    assert err.transport_failure is (name in FALLBACK_WORTHY)
    assert err.transport_failure is isinstance(err, TransportFailureError)


def test_transport_failure_is_read_only() -> None:
    err = build(PUBLIC_ERRORS["NetworkError"])
    with pytest.raises(AttributeError):
        err.transport_failure = True  # type: ignore[misc]
    assert err.transport_failure is False


# --------------------------------------------------------------------------------------------------
# the timeout alias
# --------------------------------------------------------------------------------------------------
def test_agent_timeout_error_is_the_same_class() -> None:
    assert AgentTimeoutError is RequestTimeoutError
    assert cursorpipe.AgentTimeoutError is cursorpipe.RequestTimeoutError is RequestTimeoutError
    assert "AgentTimeoutError" in errors.__all__ and "RequestTimeoutError" in errors.__all__
    with pytest.raises(AgentTimeoutError):
        raise RequestTimeoutError("late")


async def test_the_request_deadline_raises_the_new_name() -> None:
    mock = cursorpipe.MockTransport(first_delay_s=5)
    async with cursorpipe.CursorClient(cursorpipe.CursorPipeConfig(max_retries=0), transport=mock) as client:
        with pytest.raises(RequestTimeoutError) as info:
            await client.generate("auto", "x", timeout_s=0.05)
    assert type(info.value) is RequestTimeoutError
    assert repr(info.value).startswith("RequestTimeoutError(")
    assert info.value.code == "timeout" and not info.value.transport_failure


# --------------------------------------------------------------------------------------------------
# ErrorCode
# --------------------------------------------------------------------------------------------------
@functools.cache
def _package_sources() -> list[tuple[Path, ast.Module]]:
    files = [p for p in sorted(PACKAGES.rglob("*.py")) if "_proto" not in p.parts and ".venv" not in p.parts]
    assert len(files) > 50
    return [(p, ast.parse(p.read_text(encoding="utf-8"), filename=str(p))) for p in files]


#: Connect's own error codes (connect.md §8.1): the transports branch on the wire error's code
#: (``error.code == "unauthenticated"``) before mapping it; those are not CursorPipeError codes.
CONNECT_CODES = {
    "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists",
    "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range",
    "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated",
}  # fmt: skip
#: Other string codes compared with a ``.code`` attribute that are not CursorPipeError codes.
NOT_OURS = CONNECT_CODES | {
    "session_exists",  # the server's own HTTP error code (server/_errors.py APIError)
}


def _code_comparisons() -> list[tuple[str, str]]:
    """(where, literal) for every ``<x>.code ==/!=/in <"literal">`` in the packages."""
    found = []
    for path, tree in _package_sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            if not any(isinstance(s, ast.Attribute) and s.attr == "code" for s in sides):
                continue
            for side in sides:
                values = side.elts if isinstance(side, (ast.Tuple, ast.Set, ast.List)) else [side]
                for v in values:
                    if isinstance(v, ast.Constant) and isinstance(v.value, str):
                        found.append((f"{path.relative_to(ROOT)}:{node.lineno}", v.value))
    return found


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def test_codes_code_branches_on_are_error_codes() -> None:
    members = {m.value for m in ErrorCode}
    strays = [(where, v) for where, v in _code_comparisons() if v not in members and v not in NOT_OURS]
    assert strays == [], "add these to errors.ErrorCode (and compare with the member)"


def test_code_comparisons_use_the_enum() -> None:
    uses = set()
    for _path, tree in _package_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_name(node.value, "ErrorCode"):
                uses.add(node.attr)
    # every member is branched on somewhere, through the enum
    assert uses >= {m.name for m in ErrorCode}
    assert uses <= set(ErrorCode.__members__)


def test_every_error_code_is_raised_somewhere() -> None:
    raised: set[str] = set()
    for _path, tree in _package_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg in ("code", "default_code"):
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    raised.add(node.value.value)
                elif isinstance(node.value, ast.Attribute) and _is_name(node.value.value, "ErrorCode"):
                    raised.add(ErrorCode[node.value.attr].value)
    assert {m.value for m in ErrorCode} <= raised


def test_error_code_compares_as_a_string() -> None:
    code: str = "client_closed"  # what CursorPipeError.code holds: a plain str
    assert code == ErrorCode.CLIENT_CLOSED and hash(code) == hash(ErrorCode.CLIENT_CLOSED)
    assert ErrorCode.NO_HTTP2 in {"no_http2"}
    assert str(ErrorCode.TRANSPORT_UNAVAILABLE) == "transport_unavailable"
    assert f"{ErrorCode.AGENT_RESTARTS_EXHAUSTED}" == "agent_restarts_exhausted"
    assert {"client_closed": 1}[ErrorCode.CLIENT_CLOSED] == 1


def test_every_error_code_is_documented() -> None:
    source = Path(errors.__file__).read_text(encoding="utf-8")
    for member in ErrorCode:
        assert re.search(rf"    #: [^\n]+\n(?:    #:[^\n]*\n)*    {member.name} = ", source), member.name


async def test_a_closed_client_says_client_closed() -> None:
    client = cursorpipe.CursorClient(transport=cursorpipe.MockTransport())
    await client.close()
    with pytest.raises(cursorpipe.SessionError) as info:
        await client.generate("auto", "x")
    assert info.value.code == ErrorCode.CLIENT_CLOSED
    assert isinstance(info.value, APIError)


# --------------------------------------------------------------------------------------------------
# defaults, str, repr, pickling (as before the tree)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_defaults_are_unchanged(name: str) -> None:
    err = build(PUBLIC_ERRORS[name])
    assert (err.code, err.retryable) == DEFAULTS[name]


@pytest.mark.parametrize("name", sorted(set(PUBLIC_ERRORS) - {"AgentTimeoutError"}))
def test_pickle_and_copy_keep_everything(name: str) -> None:
    err = build(
        PUBLIC_ERRORS[name],
        code="some_code",
        retryable=True,
        retry_after=2.5,
        request_id="req-1",
        transport="connect",
        details={"param": "model"},
    )
    pickled = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own errors, not untrusted data
    for clone in (pickled, copy.copy(err), copy.deepcopy(err)):
        assert type(clone) is type(err)
        assert clone.args == err.args
        assert vars(clone) == vars(err)
        assert str(clone) == str(err) and repr(clone) == repr(err)


def test_model_not_found_survives_pickling_with_its_message() -> None:
    err = ModelNotFoundError("gpt-nope", ["auto"])
    clone = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own errors, not untrusted data
    assert clone.model == "gpt-nope" and clone.available == ["auto"]
    # before the tree, unpickling ran __init__ again and nested the message in a second one
    assert clone.args == (err.message,) and str(clone).count("is not available") == 1


def test_crash_details_survive_pickling() -> None:
    err = errors.AgentCrashError("agent exited", exit_code=3, stderr="FATAL: x")
    clone = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own errors, not untrusted data
    assert (clone.exit_code, clone.stderr, clone.retryable) == (3, "FATAL: x", True)


def test_str_is_the_message_and_repr_shows_only_message_and_code() -> None:
    secret = "crsr_test_fake_key_for_repr_check"
    err = errors.AgentCrashError(
        "The agent exited with code 3.", exit_code=3, stderr=f"token {secret}", details={"key": secret}
    )
    assert str(err) == "The agent exited with code 3."
    assert repr(err) == "AgentCrashError('The agent exited with code 3.', code='agent_crashed')"
    # stderr and details travel as attributes only: never in str/repr, so never in a log line
    assert secret not in str(err) and secret not in repr(err)
