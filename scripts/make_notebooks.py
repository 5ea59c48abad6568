"""Write the walkthrough notebooks in notebooks/ from the cells below, with their outputs.

    .venv/bin/python scripts/make_notebooks.py --execute   # write and run them: the stored outputs
    .venv/bin/python scripts/make_notebooks.py             # write them without outputs (quick edit)

Edit the cells here, never the .ipynb files. Every notebook runs top to bottom offline against
cursorpipe's Cursor API emulator when CURSOR_API_KEY is not set (``notebooks/_offline.py`` is the
shared bootstrap), and against your Cursor account when it is. ``--execute`` always runs them offline
and stores the outputs; ``tests/notebooks`` (part of ``python3 dev.py test``) runs them again and
compares the fresh outputs with the stored ones, strictly except for what ``VOLATILE`` names
(ports, ids, addresses, temporary paths), and checks the cells match this script.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks"

SETUP_MD = """\
**Offline or live.** With `CURSOR_API_KEY` set, this notebook talks to your Cursor account. Without
it, it starts cursorpipe's Cursor API emulator on loopback (fake, deterministic answers, real
protocol) so every cell runs anywhere. The bootstrap is `notebooks/_offline.py`."""

SETUP = """\
from _offline import start_backend

backend = start_backend()  # closed in the last cell
settings = backend.settings  # {} with your account; the emulator's URL and key offline"""


def quickstart() -> list[nbformat.NotebookNode]:
    return [
        new_markdown_cell(
            "# cursorpipe quickstart\n\n"
            "The async `CursorClient`: one-shot answers, streaming, typed events (thinking, usage), "
            "sessions whose history Cursor keeps, and the model list.\n\n" + SETUP_MD
        ),
        new_code_cell(SETUP),
        new_markdown_cell(
            "## A client\n\nNotebooks already run an event loop, so cells can `await` directly."
        ),
        new_code_cell(
            "from cursorpipe import CursorClient, CursorPipeConfig\n\n"
            "client = CursorClient(CursorPipeConfig(**settings))\n"
            'print(await client.generate("auto", "Say hi in five words"))'
        ),
        new_markdown_cell("## Streaming"),
        new_code_cell(
            'async for chunk in client.stream("auto", "Count from one to five"):\n'
            '    print(chunk, end="", flush=True)'
        ),
        new_markdown_cell(
            "## Typed events\n\n`events()` is what everything else is built on: transport info, thinking "
            "and text deltas, tool calls, one usage event and the end of the turn."
        ),
        new_code_cell(
            "from cursorpipe import TextDelta, ThinkingDelta, TurnEnd, UsageEvent\n\n"
            'async for event in client.events("auto", prompt="Why is the sky blue? One sentence."):\n'
            "    if isinstance(event, ThinkingDelta):\n"
            '        print("[thinking]", event.text)\n'
            "    elif isinstance(event, TextDelta):\n"
            '        print(event.text, end="")\n'
            "    elif isinstance(event, UsageEvent):\n"
            '        print("\\n[usage]", event.usage.as_dict())\n'
            "    elif isinstance(event, TurnEnd):\n"
            '        print("[end]", event.stop_reason)'
        ),
        new_markdown_cell(
            "## A full result\n\n`complete()` returns text, thinking, usage and which model answered."
        ),
        new_code_cell(
            'result = await client.complete("auto", prompt="Name three prime numbers.")\n'
            "print(result.text)\n"
            'print("model:", result.model, "| stop reason:", result.stop_reason)\n'
            'print("thinking:", result.thinking, "| usage:", result.usage.total_tokens, "tokens")'
        ),
        new_markdown_cell(
            "## Sessions\n\nCursor keeps the conversation; each turn sends only the new message."
        ),
        new_code_cell(
            'async with client.session("auto") as session:\n'
            '    await session.prompt("My name is Ada.")\n'
            '    answer = await session.prompt("What is my name?")\n'
            "print(answer.text)\n"
            'print("turns:", session.turn_count)'
        ),
        new_markdown_cell("## Models"),
        new_code_cell(
            'for model in await client.list_models():\n    print(f"{model.id:24} {model.display_name}")'
        ),
        new_markdown_cell("## Clean up"),
        new_code_cell("await client.close()\nbackend.close()"),
    ]


def langchain() -> list[nbformat.NotebookNode]:
    return [
        new_markdown_cell(
            "# LangChain: `ChatCursor`\n\n"
            "A LangChain chat model for your Cursor models: LCEL chains, streaming, sessions, tool "
            "calling and structured output.\n\n" + SETUP_MD
        ),
        new_code_cell(SETUP),
        new_code_cell(
            "from langchain_cursorpipe import ChatCursor\n\n"
            'llm = ChatCursor(model="auto", **settings)\n'
            'message = await llm.ainvoke("Say hi in five words")\n'
            "print(message.content)\n"
            'print("usage:", message.usage_metadata)\n'
            'print("metadata:", message.response_metadata)\n'
            'print("thinking:", message.additional_kwargs.get("reasoning_content"))'
        ),
        new_markdown_cell("## A chain"),
        new_code_cell(
            "from langchain_core.output_parsers import StrOutputParser\n"
            "from langchain_core.prompts import ChatPromptTemplate\n\n"
            "prompt = ChatPromptTemplate.from_messages(\n"
            '    [("system", "You answer in one short sentence."), ("human", "What is {topic}?")]\n'
            ")\n"
            "chain = prompt | llm | StrOutputParser()\n"
            'print(await chain.ainvoke({"topic": "a monad"}))'
        ),
        new_markdown_cell("## Streaming"),
        new_code_cell(
            'async for token in chain.astream({"topic": "entropy"}):\n    print(token, end="", flush=True)'
        ),
        new_markdown_cell(
            "Batches run concurrently; sync calls work too (they use cursorpipe's sync bridge)."
        ),
        new_code_cell(
            'answers = await chain.abatch([{"topic": "a qubit"}, {"topic": "a photon"}])\n'
            "print(answers)\n"
            'print(llm.invoke("And a sync call.").content)'
        ),
        new_markdown_cell(
            "## Sessions\n\n`with_session()` binds the model to one Cursor conversation: Cursor keeps "
            "the history and each call sends only what it has not seen yet. Without a session every "
            "call is stateless and sends the whole conversation."
        ),
        new_code_cell(
            "async with llm.with_session() as chat:\n"
            '    await chat.ainvoke("My name is Ada.")\n'
            '    reply = await chat.ainvoke("What is my name?")\n'
            "    print(reply.content)\n"
            '    print("session:", chat.session_id)'
        ),
        new_markdown_cell(
            "## Tool calling\n\n`bind_tools` offers your functions to the model. The turn ends at the "
            "model's tool calls; run them and send the results back as `ToolMessage`s in the next "
            "call. On the connect transport the calls travel on Cursor's own MCP tool channel (the "
            "emulator's model calls a tool whose name it finds in the question and then answers "
            "with its result)."
        ),
        new_code_cell(
            "from langchain_core.messages import HumanMessage\n"
            "from langchain_core.tools import tool\n\n\n"
            "@tool\n"
            "def get_weather(city: str) -> str:\n"
            '    """Get the current weather in a city."""\n'
            '    return f"Sunny and 21 C in {city}"\n\n\n'
            "with_tools = llm.bind_tools([get_weather])\n"
            'messages = [HumanMessage("What is the weather in Lisbon? Use the get_weather tool.")]\n'
            "reply = await with_tools.ainvoke(messages)\n"
            'print("tool calls:", reply.tool_calls)\n'
            "messages.append(reply)\n"
            "for call in reply.tool_calls:\n"
            "    messages.append(await get_weather.ainvoke(call))  # a ToolMessage\n"
            "print((await with_tools.ainvoke(messages)).content)"
        ),
        new_markdown_cell(
            "## Structured output\n\n`with_structured_output` returns instances of a pydantic class "
            '(or dicts for a TypedDict or JSON schema). The default `method="json_schema"` validates '
            "the answer against the schema, repairs once and otherwise raises "
            "`cursorpipe.StructuredOutputError` (offline, the emulator answers a schema request with "
            "a valid instance filled from the message, as a real model would); "
            '`method="function_calling"` forces a tool; `"json_mode"` asks for any JSON object.'
        ),
        new_code_cell(
            "from pydantic import BaseModel, Field\n\n\n"
            "class Person(BaseModel):\n"
            '    """A person mentioned in the text."""\n\n'
            '    name: str = Field(description="the person\'s full name")\n'
            '    age: int = Field(description="age in years")\n\n\n'
            "extract = llm.with_structured_output(Person)\n"
            'person = await extract.ainvoke("Ada Lovelace died at 36.")\n'
            "print(repr(person))"
        ),
        new_markdown_cell("## Clean up"),
        new_code_cell(
            "await llm.aclose()  # this loop's client\n"
            "llm.close()  # the sync bridge's client\n"
            "backend.close()"
        ),
    ]


def llamaindex() -> list[nbformat.NotebookNode]:
    return [
        new_markdown_cell(
            "# LlamaIndex: `CursorLLM`\n\n"
            "`CursorLLM` as `Settings.llm` in a query engine and a chat engine over a few local "
            "documents. Embeddings come from LlamaIndex's `MockEmbedding` so the notebook needs no "
            "embedding service; with mock embeddings retrieval ranks the passages arbitrarily, so "
            "the engines here retrieve all three. Use a real embedding model for real retrieval.\n\n"
            + SETUP_MD
            + "\n\nOffline, the emulated model gets a scripted reply, `answer_from_context` from "
            "`_offline.py`: it answers with the retrieved passage that best matches the question "
            "(and with the emulator's usual replies otherwise), so the answers below come only from "
            "the context that reached the model. Your account ignores it."
        ),
        new_code_cell(
            "from _offline import answer_from_context, start_backend\n\n"
            "backend = start_backend(reply=answer_from_context)  # closed in the last cell\n"
            "settings = backend.settings  # {} with your account; the emulator's URL and key offline"
        ),
        new_code_cell(
            "from llama_index.core import Document, Settings, VectorStoreIndex\n"
            "from llama_index.core.embeddings import MockEmbedding\n"
            "from llama_index.llms.cursorpipe import CursorLLM\n\n"
            'Settings.llm = CursorLLM(model="auto", **settings)\n'
            "Settings.embed_model = MockEmbedding(embed_dim=64)\n"
            "print(Settings.llm.metadata)"
        ),
        new_code_cell(
            "documents = [\n"
            '    Document(text="The lighthouse at Skerry Point was built in 1871 from local granite."),\n'
            '    Document(text="Its keeper, Morwenna Tregarthen, logs the weather every four hours."),\n'
            '    Document(text="The lamp was electrified in 1926 and automated in 1989."),\n'
            "]\n"
            "index = VectorStoreIndex.from_documents(documents)"
        ),
        new_markdown_cell(
            "## Query engine\n\nThe answer names a year that appears only in the documents, never in "
            "the question: the retrieved context reached the model."
        ),
        new_code_cell(
            "query_engine = index.as_query_engine(similarity_top_k=3)\n"
            'response = await query_engine.aquery("When was the lamp automated?")\n'
            "print(response)\n"
            'assert "1989" in str(response), "the answer does not use the retrieved context"\n'
            'print("retrieved:", len(response.source_nodes), "passages")'
        ),
        new_markdown_cell("Streaming:"),
        new_code_cell(
            "streaming = index.as_query_engine(similarity_top_k=3, streaming=True)\n"
            'response = await streaming.aquery("When was the lighthouse built?")\n'
            "async for token in response.async_response_gen():\n"
            '    print(token, end="", flush=True)'
        ),
        new_markdown_cell(
            "## Chat engine\n\nThe `context` chat mode retrieves for every message and hands the "
            "passages to the model in the system prompt."
        ),
        new_code_cell(
            'chat_engine = index.as_chat_engine(chat_mode="context", similarity_top_k=3)\n'
            'print(await chat_engine.achat("What is the lighthouse built from?"))\n'
            'print(await chat_engine.achat("How often does the keeper log the weather?"))'
        ),
        new_markdown_cell(
            "## Token counting\n\n`CursorLLM` reports Cursor's token counts in `raw['usage']`, which "
            "LlamaIndex's `TokenCountingHandler` reads."
        ),
        new_code_cell(
            "from llama_index.core.callbacks import CallbackManager, TokenCountingHandler\n\n"
            "counter = TokenCountingHandler()\n"
            "Settings.callback_manager = CallbackManager([counter])\n"
            'await Settings.llm.acomplete("Summarise the lighthouse history in one line.")\n'
            'print("prompt tokens:", counter.prompt_llm_token_count)\n'
            'print("completion tokens:", counter.completion_llm_token_count)'
        ),
        new_markdown_cell(
            "## An agent with tools\n\n`CursorLLM` is a `FunctionCallingLLM`, so LlamaIndex's "
            "`FunctionAgent` can hand it Python functions: the model calls one, the agent runs it and "
            "the model answers with the result."
        ),
        new_code_cell(
            "from llama_index.core.agent.workflow import FunctionAgent\n\n\n"
            "def lamp_year(event: str) -> str:\n"
            '    """The year the lighthouse lamp was electrified or automated."""\n'
            '    return "1926" if "electr" in event.lower() else "1989"\n\n\n'
            "agent = FunctionAgent(tools=[lamp_year], llm=Settings.llm)\n"
            'result = await agent.run(user_msg="Use the lamp_year tool: when was the lamp automated?")\n'
            "print(result)\n"
            'print("tool calls:", [(c.tool_name, c.tool_kwargs) for c in result.tool_calls])'
        ),
        new_markdown_cell("## Clean up"),
        new_code_cell("await Settings.llm.aclose()\nbackend.close()"),
    ]


SERVER_START = """\
import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

live = bool(os.environ.get("CURSOR_API_KEY"))
with socket.socket() as probe:  # a free loopback port
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
command = [str(Path(sys.executable).parent / "cursorpipe-server"), "--port", str(port), "--pool-size", "0"]
if not live:
    command.append("--emulator")  # the built-in Cursor API emulator: no account needed
log = tempfile.NamedTemporaryFile("w+", prefix="cursorpipe-server-", suffix=".log")
server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
atexit.register(server.terminate)  # stopped in the last cell; this covers a kernel that exits first

base_url = f"http://127.0.0.1:{port}/v1"
deadline = time.monotonic() + 30
while True:  # ready once /health answers
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        break
    except httpx.TransportError:
        if server.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise RuntimeError("cursorpipe-server did not start:\\n" + log.read()) from None
        time.sleep(0.1)
print("cursorpipe-server is up:", {k: health[k] for k in ("status", "emulated", "transport")})"""


def server() -> list[nbformat.NotebookNode]:
    return [
        new_markdown_cell(
            "# The OpenAI-compatible server: `openai`, LangChain's `ChatOpenAI`, LiteLLM\n\n"
            "`cursorpipe-server` speaks the OpenAI API, so any OpenAI client can use your Cursor "
            "models. This notebook starts it as a separate process, exactly as you would from a "
            "shell: `cursorpipe-server` with your account (`CURSOR_API_KEY` set), "
            "`cursorpipe-server --emulator` offline (the built-in Cursor API emulator: fake, "
            "deterministic answers, real protocol). It waits for `/health` and stops the server in "
            "the last cell."
        ),
        new_code_cell(SERVER_START),
        new_markdown_cell("## The `openai` SDK"),
        new_code_cell(
            "from openai import OpenAI\n\n"
            'client = OpenAI(base_url=base_url, api_key="not-needed-on-loopback")\n'
            "print([model.id for model in client.models.list()])"
        ),
        new_code_cell(
            "completion = client.chat.completions.create(\n"
            '    model="auto",\n'
            "    messages=[\n"
            '        {"role": "system", "content": "You are terse."},\n'
            '        {"role": "user", "content": "Say hi in five words"},\n'
            "    ],\n"
            ")\n"
            "print(completion.choices[0].message.content)\n"
            "print(completion.usage)"
        ),
        new_markdown_cell("Streaming, with usage in a final chunk:"),
        new_code_cell(
            "stream = client.chat.completions.create(\n"
            '    model="auto",\n'
            '    messages=[{"role": "user", "content": "Count from one to five"}],\n'
            "    stream=True,\n"
            '    stream_options={"include_usage": True},\n'
            ")\n"
            "for chunk in stream:\n"
            "    if chunk.choices and chunk.choices[0].delta.content:\n"
            '        print(chunk.choices[0].delta.content, end="", flush=True)\n'
            "    if chunk.usage:\n"
            '        print("\\nusage:", chunk.usage)'
        ),
        new_markdown_cell(
            "## Tools\n\nOpenAI-style `tools`: the model answers with `tool_calls`, you run them and "
            "send the results back as `tool` messages. (The emulated model calls a tool named in the "
            "question, then answers with its result.)"
        ),
        new_code_cell(
            "import json\n\n"
            "tools = [\n"
            "    {\n"
            '        "type": "function",\n'
            '        "function": {\n'
            '            "name": "get_weather",\n'
            '            "description": "Get the current weather in a city.",\n'
            '            "parameters": {\n'
            '                "type": "object",\n'
            '                "properties": {"city": {"type": "string"}},\n'
            '                "required": ["city"],\n'
            "            },\n"
            "        },\n"
            "    }\n"
            "]\n"
            'question = "What is the weather in Lisbon? Use the get_weather tool."\n'
            'messages = [{"role": "user", "content": question}]\n'
            'first = client.chat.completions.create(model="auto", messages=messages, tools=tools)\n'
            "call = first.choices[0].message.tool_calls[0]\n"
            "print(first.choices[0].finish_reason, call.function.name, json.loads(call.function.arguments))\n"
            "messages.append(first.choices[0].message.model_dump(exclude_none=True))\n"
            'city = json.loads(call.function.arguments)["city"]\n'
            'result = f"Sunny and 21 C in {city}"\n'
            'messages.append({"role": "tool", "tool_call_id": call.id, "content": result})\n'
            'final = client.chat.completions.create(model="auto", messages=messages, tools=tools)\n'
            "print(final.choices[0].message.content)"
        ),
        new_markdown_cell(
            "## `response_format`\n\n`chat.completions.parse` with a pydantic class sends a JSON "
            "schema; the server validates the model's answer against it (one repair round) and "
            "answers HTTP 422 `structured_output_invalid` (`openai.UnprocessableEntityError`) "
            "rather than pass on something that does not fit. Offline, the emulated model answers "
            "a schema with a valid instance filled from the message, as a real model would."
        ),
        new_code_cell(
            "import openai\n"
            "from pydantic import BaseModel\n\n\n"
            "class Person(BaseModel):\n"
            "    name: str\n"
            "    age: int\n\n\n"
            "try:\n"
            "    parsed = client.chat.completions.parse(\n"
            '        model="auto",\n'
            '        messages=[{"role": "user", "content": "Ada Lovelace died at 36."}],\n'
            "        response_format=Person,\n"
            "    )\n"
            "    print(repr(parsed.choices[0].message.parsed))\n"
            "except openai.UnprocessableEntityError as exc:\n"
            '    print("HTTP", exc.status_code, exc.body)'
        ),
        new_markdown_cell("The async client works the same way:"),
        new_code_cell(
            "from openai import AsyncOpenAI\n\n"
            'async_client = AsyncOpenAI(base_url=base_url, api_key="not-needed-on-loopback")\n'
            "reply = await async_client.chat.completions.create(\n"
            '    model="auto", messages=[{"role": "user", "content": "One word for blue?"}]\n'
            ")\n"
            "print(reply.choices[0].message.content)\n"
            "await async_client.close()"
        ),
        new_markdown_cell(
            "## LangChain's `ChatOpenAI`\n\nPoint `base_url` at the server; `stream_usage=True` "
            "asks for the usage chunk when streaming. (For LangChain, `ChatCursor` from "
            "`langchain-cursorpipe` skips the server altogether, see notebook 02.)"
        ),
        new_code_cell(
            "from langchain_openai import ChatOpenAI\n\n"
            "chat = ChatOpenAI(\n"
            '    model="auto", base_url=base_url, api_key="not-needed-on-loopback", stream_usage=True\n'
            ")\n"
            'print(chat.invoke("Say hi in five words").content)\n'
            "last = None\n"
            'for piece in chat.stream("Count from one to five"):\n'
            '    print(piece.content, end="", flush=True)\n'
            "    last = piece if last is None else last + piece\n"
            'print("\\nusage:", last.usage_metadata)'
        ),
        new_markdown_cell(
            "## LiteLLM\n\nLiteLLM's `openai/` provider prefix with `api_base` pointing at the server. "
            "`LITELLM_LOCAL_MODEL_COST_MAP` keeps LiteLLM from downloading its price list at import."
        ),
        new_code_cell(
            'os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")\n'
            "import litellm\n\n"
            "answer = litellm.completion(\n"
            '    model="openai/auto",\n'
            "    api_base=base_url,\n"
            '    api_key="not-needed-on-loopback",\n'
            '    messages=[{"role": "user", "content": "Say hi in five words"}],\n'
            ")\n"
            "print(answer.choices[0].message.content)\n"
            'print("usage:", answer.usage.prompt_tokens, "+", answer.usage.completion_tokens, "tokens")'
        ),
        new_markdown_cell("## Clean up\n\nStop the server (it drains in-flight requests on SIGTERM)."),
        new_code_cell(
            'client.close()\nserver.terminate()\nprint("server exit code:", server.wait(30))\nlog.close()'
        ),
    ]


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart,
    "02_langchain.ipynb": langchain,
    "03_llamaindex.ipynb": llamaindex,
    "04_server_openai.ipynb": server,
}

# What varies from run to run and is no part of what a notebook shows: loopback ports, ids,
# object addresses and temporary paths. Everything else must match the stored outputs exactly.
VOLATILE = [
    (re.compile(r"\b(127\.0\.0\.1|localhost):\d+"), r"\1:<port>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\bcall_[0-9a-f]{6,}_\d+\b"), "<call-id>"),
    (re.compile(r"\b(chatcmpl|req|run)[-_][0-9a-zA-Z]{8,}\b"), r"\1-<id>"),
    (re.compile(r"\bat 0x[0-9a-f]+\b"), "at <address>"),
    (re.compile(r"/tmp/[^\s'\"]+"), "<tmp>"),  # noqa: S108 (a pattern, not a file)
]


def normalise(text: str) -> str:
    """``text`` with the run-dependent parts (ports, ids, addresses, temp paths) replaced by tags."""
    for pattern, tag in VOLATILE:
        text = pattern.sub(tag, text)
    return text


def merge_streams(nb: nbformat.NotebookNode) -> None:
    """Join consecutive stream outputs of one cell (how a stream is chunked depends on timing)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged: list[nbformat.NotebookNode] = []
        for out in cell.outputs:
            last = merged[-1] if merged else None
            if last is not None and out.output_type == last.output_type == "stream" and last.name == out.name:
                last.text += out.text
                continue
            merged.append(out)
        cell.outputs = merged


def comparable(nb: nbformat.NotebookNode) -> list[tuple[str, list[str]]]:
    """Each code cell as ``(source, [normalised output, ...])``, the form the comparison checks."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outs = []
        for out in cell.outputs:
            if out.output_type == "stream":
                outs.append(f"[{out.name}]\n{normalise(out.text)}")
            elif out.output_type == "error":
                outs.append(f"[error] {out.ename}: {normalise(out.evalue)}")
            else:
                data = out.get("data", {})
                outs.append(f"[{out.output_type}]\n{normalise(data.get('text/plain', repr(sorted(data))))}")
        cells.append((cell.source, outs))
    return cells


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as the builders above write it, without outputs."""
    nb = new_notebook(cells=NOTEBOOKS[name]())
    for i, cell in enumerate(nb.cells):  # stable ids keep regenerated files' diffs to what changed
        cell.id = f"cell-{i:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 120) -> nbformat.NotebookNode:
    """Run ``nb`` top to bottom in a fresh kernel from ``notebooks/``, always offline.

    ``CURSOR_API_KEY`` is removed from the kernel's environment: the stored outputs are the
    emulator's, so they can be compared on any machine. Raises ``CellExecutionError`` on a failing cell.
    """
    from nbclient import NotebookClient

    saved = os.environ.pop("CURSOR_API_KEY", None)
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(OUT)}}
        ).execute()
    finally:
        if saved is not None:
            os.environ["CURSOR_API_KEY"] = saved
    merge_streams(nb)
    for cell in nb.cells:  # keep the stored files free of timestamps
        cell.metadata.pop("execution", None)
    nb.metadata.get("language_info", {}).pop("version", None)
    return nb


def _same(stored: nbformat.NotebookNode, fresh: nbformat.NotebookNode) -> bool:
    """Same cells and the same outputs once normalised."""
    cells = [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in fresh.cells]
    return cells and comparable(stored) == comparable(fresh)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--execute", action="store_true", help="run each notebook and store its outputs")
    parser.add_argument("names", nargs="*", help="notebooks to write (default: all)")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    for name in args.names or NOTEBOOKS:
        nb = build(name)
        if args.execute:
            started = time.monotonic()
            execute(nb)
            print(f"executed {name} in {time.monotonic() - started:.1f} s")
        path = OUT / name
        if args.execute and path.exists() and _same(nbformat.read(path, as_version=4), nb):
            # Only ports and ids moved: keep the file, so a regeneration diffs to what changed.
            print("unchanged", path.relative_to(ROOT))
            continue
        nbformat.write(nb, path)
        print("wrote", path.relative_to(ROOT))
    if not args.execute:
        print("without outputs: tests/notebooks fails until you run this again with --execute")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
