"""The HTTP/2 channel module loads only on the HTTP/2 path (issue 16): importing the connect
transport and building one for an http:// backend (the HTTP/1.1 RunSSE path) leaves it unloaded.

(httpcore, under httpx, imports the h2 library itself whenever it is installed, so only our own
HTTP/2 module is deferred; see bench/RESULTS.md.)"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from cursorpipe import CursorPipeConfig
from cursorpipe.transports.connect import ConnectTransport
ConnectTransport(CursorPipeConfig(strategy="connect", backend_url="http://127.0.0.1:9", api_key="k"))
before = sorted(sys.modules)
from cursorpipe.transports.connect import _h2  # what the HTTP/2 path imports on first use
print(json.dumps([before, sorted(sys.modules)]))
"""
H2_MODULE = "cursorpipe.transports.connect._h2"


def test_the_http2_module_is_imported_only_by_the_http2_path() -> None:
    argv = [sys.executable, "-c", PROBE]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert "cursorpipe.transports.connect.transport" in before
    assert H2_MODULE not in before
    assert H2_MODULE in after
