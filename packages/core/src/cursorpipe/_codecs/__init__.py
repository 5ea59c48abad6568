"""Sans-IO wire codecs shared by the transports and the test doubles (issue 13, design.md lesson 2).

Bytes in, values out; no sockets, processes or asyncio. ``connect`` holds the Connect envelope,
end-stream and unary-error codec (connect.md §3), ``jsonrpc`` the JSON-RPC line codec of
``agent acp`` (acp.md §2), ``stream_json`` the parser of ``agent --print`` stream-json output
(acp.md §6.2-6.3). The emulator imports from here, never from a transport's private modules, so a
transport can change its internals without touching the test doubles.
"""
