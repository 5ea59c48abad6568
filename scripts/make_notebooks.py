"""Write the walkthrough notebooks in notebooks/ (without outputs) from the cells below.

    .venv/bin/python scripts/make_notebooks.py

Every notebook runs top to bottom offline against cursorpipe's Cursor API emulator when
CURSOR_API_KEY is not set, and against your Cursor account when it is. The test command executes
them with nbmake (``pytest --nbmake notebooks``). Edit the cells here, not the .ipynb files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks"

SETUP_MD = """\
**Offline or live.** With `CURSOR_API_KEY` set, this notebook talks to your Cursor account. Without
it, it starts cursorpipe's Cursor API emulator on loopback (fake, deterministic answers, real
protocol) so every cell runs anywhere."""

SETUP = """\
import contextlib
import os

stack = contextlib.ExitStack()  # closed in the last cell
if os.environ.get("CURSOR_API_KEY"):
    settings = {}  # everything comes from the environment (CURSOR_API_KEY, CURSORPIPE_*)
    print("Using your Cursor account")
else:
    from cursorpipe.testing.emulator import Emulator

    emu = stack.enter_context(Emulator.start_in_thread())
    settings = {"strategy": "connect", "backend_url": emu.url, "api_key": emu.api_key}
    print("No CURSOR_API_KEY: using the offline Cursor API emulator at", emu.url)"""


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
        new_code_cell("await client.close()\nstack.close()"),
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
            "await llm.aclose()  # this loop's client\nllm.close()  # the sync bridge's client\nstack.close()"
        ),
    ]


def llamaindex() -> list[nbformat.NotebookNode]:
    return [
        new_markdown_cell(
            "# LlamaIndex: `CursorLLM`\n\n"
            "`CursorLLM` as `Settings.llm` in a query engine and a chat engine over a few local "
            "documents. Embeddings come from LlamaIndex's `MockEmbedding` so the notebook needs no "
            "embedding service; use a real embedding model for real retrieval.\n\n" + SETUP_MD
        ),
        new_code_cell(SETUP),
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
        new_markdown_cell("## Query engine"),
        new_code_cell(
            "query_engine = index.as_query_engine(similarity_top_k=2)\n"
            'response = await query_engine.aquery("When was the lamp automated?")\n'
            "print(response)\n"
            "for node in response.source_nodes:\n"
            '    print("source:", node.node.get_content())'
        ),
        new_markdown_cell("Streaming:"),
        new_code_cell(
            "streaming = index.as_query_engine(streaming=True)\n"
            'response = await streaming.aquery("Who keeps the lighthouse?")\n'
            "async for token in response.async_response_gen():\n"
            '    print(token, end="", flush=True)'
        ),
        new_markdown_cell("## Chat engine"),
        new_code_cell(
            'chat_engine = index.as_chat_engine(chat_mode="condense_plus_context")\n'
            'print(await chat_engine.achat("Who keeps the lighthouse?"))\n'
            'print(await chat_engine.achat("How often does she log the weather?"))'
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
        new_code_cell("await Settings.llm.aclose()\nstack.close()"),
    ]


def server() -> list[nbformat.NotebookNode]:
    return [
        new_markdown_cell(
            "# The OpenAI-compatible server with the `openai` SDK\n\n"
            "`cursorpipe-server` speaks the OpenAI API, so any OpenAI client can use your Cursor "
            "models. From a shell: `cursorpipe-server` (or `cursorpipe-server --emulator` offline). "
            "Here the app runs in a background thread of this notebook.\n\n" + SETUP_MD
        ),
        new_code_cell(SETUP),
        new_code_cell(
            "import socket\n"
            "import threading\n"
            "import time\n\n"
            "import uvicorn\n"
            "from cursorpipe import CursorPipeConfig\n"
            "from cursorpipe.server import create_app\n\n"
            "app = create_app(CursorPipeConfig(pool_size=0, **settings), emulated=bool(settings))\n"
            "with socket.socket() as probe:  # pick a free loopback port\n"
            '    probe.bind(("127.0.0.1", 0))\n'
            "    port = probe.getsockname()[1]\n"
            'server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))\n'
            "thread = threading.Thread(target=server.run, daemon=True)\n"
            "thread.start()\n"
            "while not server.started:\n"
            "    time.sleep(0.05)\n"
            'base_url = f"http://127.0.0.1:{port}/v1"\n'
            'print("serving on", base_url)'
        ),
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
        new_markdown_cell("## Clean up"),
        new_code_cell("client.close()\nserver.should_exit = True\nthread.join(10)\nstack.close()"),
    ]


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart,
    "02_langchain.ipynb": langchain,
    "03_llamaindex.ipynb": llamaindex,
    "04_server_openai.ipynb": server,
}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, build in NOTEBOOKS.items():
        nb = new_notebook(cells=build())
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.validate(nb)
        path = OUT / name
        nbformat.write(nb, path)
        print("wrote", path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
