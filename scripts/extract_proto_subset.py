#!/usr/bin/env python3
"""Extract the subset of Cursor's wire schema that cursorpipe uses into real .proto files.

    python3 scripts/extract_proto_subset.py ../shared/protocol/agent-v1.schema.txt

Reads ``agent-v1.schema.txt`` (the schema recovered from the official cursor-sdk 1.1.0 bundle; its field
numbers, types, oneofs and enum values are authoritative) and writes ``protos/agent/v1/agent.proto`` and
``protos/aiserver/v1/aiserver.proto``. Only the types listed in KEEP (plus everything reachable from the
types in CLOSURE, plus every enum a kept field uses) are written; a field whose message type is not kept
is left out, so on the wire it is an unknown field: protobuf's Python runtime keeps unknown fields when
decoding and re-encoding, so nothing the server sends is lost or breaks decoding. Numbers and names are
never changed. Run it only when the subset must grow; ``scripts/gen_protos.py`` turns the .proto files
into Python code.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Types kept as written in the schema (fully qualified). Nested types are "Parent.Child".


def _names(prefix: str, text: str) -> set[str]:
    return {prefix + n for n in text.split()}


KEEP: set[str] = _names(
    "agent.v1.",
    """
    AgentClientMessage AgentServerMessage ClientHeartbeat TtftBreakdown
    AgentRunRequest ConversationAction UserMessageAction UserMessage ResumeAction CancelAction
    RequestedModel RequestedModel.ModelParameterValue ModelDetails ThinkingDetails McpTools
    ConversationStateStructure ConversationTokenDetails
    InteractionUpdate TextDeltaUpdate ThinkingDeltaUpdate ThinkingCompletedUpdate TokenDeltaUpdate
    HeartbeatUpdate TurnEndedUpdate EstimatedCost StepStartedUpdate StepCompletedUpdate
    UserMessageAppendedUpdate SummaryUpdate SummaryStartedUpdate SummaryCompletedUpdate RoutedModelUpdate
    ThinkingNoteUpdate ToolRequestsListedUpdate ToolCallStartedUpdate ToolCallCompletedUpdate
    PartialToolCallUpdate ToolCallDeltaUpdate ToolCall McpToolCall
    ExecServerMessage ExecClientMessage ExecServerControlMessage ExecServerAbort ExecClientControlMessage
    ExecClientStreamClose ExecClientThrow ExecClientHeartbeat
    RequestContextArgs RequestContextResult RequestContextSuccess RequestContextError RequestContextRejected
    RequestContext RequestContextEnv
    KvServerMessage KvClientMessage GetBlobArgs SetBlobArgs GetBlobResult SetBlobResult Error
    InteractionQuery WebSearchRequestQuery AskQuestionInteractionQuery WebFetchRequestQuery
    SwitchModeRequestQuery
    McpInstructions McpMetaToolOptions McpDescriptor McpToolDescriptor
    CursorRule CursorRuleType CursorRuleTypeGlobal
    McpStateExecArgs McpStateExecResult McpStateSuccess McpStateError McpStateRejected McpStateServer
    CreatePlanRequestQuery CreatePlanArgs McpAuthRequestQuery GenerateImageRequestQuery
    PrManagementRequestQuery ReplaceEnvArgs ConnectScmRequestQuery SetupVmEnvironmentArgs
    SelectedContext SelectedImage SelectedImage.Dimension SelectedImage.BlobIdWithData
    GetUsableModelsRequest GetUsableModelsResponse GetDefaultModelForCliRequest GetDefaultModelForCliResponse
    """,
) | _names(
    "aiserver.v1.",
    """
    BidiRequestId BidiAppendRequest BidiAppendResponse ErrorDetails CustomErrorDetails ErrorAnalyticsMetadata
    """,
)

# Roots whose whole reachable graph is kept (small, and every piece matters: tool calls of issue 7,
# history for stateless chat, every rejected form of an interaction response).
CLOSURE: list[str] = [
    "agent.v1.InteractionResponse",
    "agent.v1.McpArgs",
    "agent.v1.McpResult",
    "agent.v1.McpToolDefinition",
    "agent.v1.McpToolResult",
    "agent.v1.ConversationHistory",
]

WELL_KNOWN = {
    "google.protobuf.Value",
    "google.protobuf.Struct",
    "google.protobuf.ListValue",
    "google.protobuf.NullValue",
    "google.protobuf.Timestamp",
}
SCALARS = {
    "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64",
    "sfixed32", "sfixed64", "bool", "string", "bytes",
}  # fmt: skip

FIELD_RE = re.compile(r"^(optional |repeated )?([A-Za-z0-9_.]+) ([A-Za-z0-9_]+) = (\d+);")
MAP_RE = re.compile(r"^map<([A-Za-z0-9_.]+), ([A-Za-z0-9_.]+)> ([A-Za-z0-9_]+) = (\d+);")
ENUM_VALUE_RE = re.compile(r"^([A-Z0-9_]+) = (-?\d+);")


@dataclass
class Field:
    label: str  # "", "optional", "repeated", "map"
    type: str  # value type for maps
    name: str
    number: int
    oneof: str | None
    key_type: str = ""


@dataclass
class Block:
    kind: str  # message | enum
    name: str
    fields: list[Field] = field(default_factory=list)
    values: list[tuple[str, int]] = field(default_factory=list)


def parse(text: str) -> dict[str, Block]:
    blocks: dict[str, Block] = {}
    cur: Block | None = None
    oneof: str | None = None
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line or raw.startswith("#"):
            continue
        m = re.match(r"^(message|enum|service) ([A-Za-z0-9_.]+) \{", line)
        if m:
            cur = Block(m.group(1), m.group(2)) if m.group(1) != "service" else None
            if cur is not None:
                blocks[cur.name] = cur
            oneof = None
            continue
        if cur is None:
            continue
        if line == "}":
            if oneof is not None:
                oneof = None
            else:
                cur = None
            continue
        m = re.match(r"^oneof ([a-z_0-9]+) \{", line)
        if m:
            oneof = m.group(1)
            continue
        if cur.kind == "enum":
            m = ENUM_VALUE_RE.match(line)
            if not m:
                raise ValueError(f"bad enum line in {cur.name}: {raw!r}")
            cur.values.append((m.group(1), int(m.group(2))))
            continue
        m = MAP_RE.match(line)
        if m:
            cur.fields.append(
                Field("map", m.group(2), m.group(3), int(m.group(4)), oneof, key_type=m.group(1))
            )
            continue
        m = FIELD_RE.match(line)
        if not m:
            raise ValueError(f"bad field line in {cur.name}: {raw!r}")
        label = (m.group(1) or "").strip()
        cur.fields.append(Field(label, m.group(2), m.group(3), int(m.group(4)), oneof))
    return blocks


def closure(blocks: dict[str, Block], roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in WELL_KNOWN or name not in blocks:
            continue
        seen.add(name)
        # a nested type needs its parent; a parent's nested enums come along
        parent = name.rsplit(".", 1)[0]
        if parent in blocks:
            todo.append(parent)
        for f in blocks[name].fields:
            if f.type not in SCALARS:
                todo.append(f.type)
    return seen


def package_of(name: str) -> str:
    return ".".join(name.split(".")[:2])


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared/protocol/agent-v1.schema.txt")
    blocks = parse(src.read_text(encoding="utf-8"))
    keep = set(KEEP) | closure(blocks, CLOSURE)
    missing = sorted(k for k in keep if k not in blocks)
    if missing:
        raise SystemExit(f"not in schema: {missing}")
    # parents of kept nested types
    for name in list(keep):
        parent = name.rsplit(".", 1)[0]
        while parent.count(".") >= 2 and parent in blocks:
            keep.add(parent)
            parent = parent.rsplit(".", 1)[0]
    # enums used by kept fields
    for name in list(keep):
        for f in blocks[name].fields:
            if f.type in blocks and blocks[f.type].kind == "enum":
                keep.add(f.type)
                parent = f.type.rsplit(".", 1)[0]
                if parent in blocks:
                    keep.add(parent)  # a nested enum needs its parent message
    # a kept message whose nested enum/message is used elsewhere is fine: nested emission below
    imports: dict[str, set[str]] = {"agent.v1": set(), "aiserver.v1": set()}
    out: dict[str, list[str]] = {"agent.v1": [], "aiserver.v1": []}
    dropped: list[str] = []

    def kept_type(t: str, pkg: str) -> bool:
        if t in SCALARS:
            return True
        if t in WELL_KNOWN:
            wkt = "timestamp" if t == "google.protobuf.Timestamp" else "struct"
            imports[pkg].add(f'import "google/protobuf/{wkt}.proto";')
            return True
        return t in keep and package_of(t) == pkg  # no cross-package imports (see module docstring)

    def type_ref(t: str) -> str:
        return t if t in SCALARS else "." + t

    def emit(name: str, indent: int, pkg: str) -> list[str]:
        b = blocks[name]
        pad = "  " * indent
        short = name.rsplit(".", 1)[1]
        lines = [f"{pad}{b.kind} {short} {{"]
        if b.kind == "enum":
            lines += [f"{pad}  {v} = {n};" for v, n in b.values]
        else:
            children = sorted(k for k in keep if k.rsplit(".", 1)[0] == name)
            for c in children:
                lines += emit(c, indent + 1, pkg)
            oneofs: dict[str, list[str]] = {}
            plain: list[str] = []
            for f in b.fields:
                ok = kept_type(f.type, pkg) and (f.label != "map" or f.key_type in SCALARS)
                if not ok:
                    dropped.append(f"{name}.{f.name} = {f.number} ({f.type})")
                    line = (
                        f"// {f.number} {f.name}: {f.type} (not in the subset: decoded as an unknown field)"
                    )
                else:
                    if f.label == "map":
                        decl = f"map<{f.key_type}, {type_ref(f.type)}>"
                    else:
                        decl = (f.label + " " if f.label else "") + type_ref(f.type)
                    line = f"{decl} {f.name} = {f.number};"
                if f.oneof is not None:
                    oneofs.setdefault(f.oneof, []).append(line)
                else:
                    plain.append(line)
            lines += [f"{pad}  {x}" for x in plain]
            for o, members in oneofs.items():
                real = [m for m in members if not m.startswith("//")]
                if real:
                    lines.append(f"{pad}  oneof {o} {{")
                    lines += [f"{pad}    {m}" for m in members]
                    lines.append(f"{pad}  }}")
                else:
                    lines += [f"{pad}  // oneof {o}:"] + [f"{pad}  {m}" for m in members]
        lines.append(f"{pad}}}")
        return lines

    for name in sorted(keep):
        if name.count(".") == 2:  # top level: pkg.v1.Name
            out[package_of(name)] += [*emit(name, 0, package_of(name)), ""]

    header = [
        "// GENERATED by scripts/extract_proto_subset.py from agent-v1.schema.txt (cursor-sdk 1.1.0 schema).",
        "// Field numbers, types, oneofs and enum values are copied unchanged; fields whose type is outside",
        "// the subset are commented out and decode as unknown fields. Do not edit by hand: grow",
        "// KEEP/CLOSURE in the script and re-run it.",
        'syntax = "proto3";',
        "",
    ]
    files = {
        "agent.v1": ROOT / "protos/agent/v1/agent.proto",
        "aiserver.v1": ROOT / "protos/aiserver/v1/aiserver.proto",
    }
    for pkg, path in files.items():
        body = [*header, f"package {pkg};", ""]
        if imports[pkg]:
            body += [*sorted(imports[pkg]), ""]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(body + out[pkg]).rstrip() + "\n", encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    print(f"{len(keep)} types kept, {len(dropped)} fields left as unknown")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
