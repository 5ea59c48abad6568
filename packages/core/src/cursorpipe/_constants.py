"""Policy constants in one place: timeouts, retries, backoff, heartbeat and stall intervals.

Values that come from Cursor's own clients cite the protocol doc section they follow.
"""

from __future__ import annotations

# Client-level retries of retryable failures that happen before any output reached the caller.
DEFAULT_MAX_RETRIES = 2
# connect.md §8.3: backoff 1 s * 2^n, capped at 60 s, up to 20 % jitter.
RETRY_BACKOFF_BASE_S = 1.0
RETRY_BACKOFF_MAX_S = 60.0
RETRY_JITTER = 0.2
# Longest Retry-After we are willing to sleep inside one call before surfacing RateLimitError.
RETRY_AFTER_MAX_WAIT_S = 30.0

# connect.md §6.4: client heartbeat every 5 s; 30 s of inbound silence is a stall.
CLIENT_HEARTBEAT_S = 5.0
STALL_TIMEOUT_S = 30.0
# connect.md §6.1: exec heartbeat every 3 s while an exec runs.
EXEC_HEARTBEAT_S = 3.0
# connect.md §6.4: after cancelling, wait up to 6 s for the server to end the stream.
CANCEL_GRACE_S = 6.0
# live-dialect.md row 10: after turn_ended keep answering KV/checkpoint messages until the server's
# end-stream, at most this long (a live-tested peer uses a 5 s guard).
POST_TURN_GUARD_S = 5.0

# connect.md §2.3: refresh at max(exp - 5 min, iat + lifetime/2); unknown exp -> 30 min lifetime.
TOKEN_REFRESH_MARGIN_S = 300.0
TOKEN_DEFAULT_LIFETIME_S = 1800.0
TOKEN_RETRY_AFTER_FAILURE_S = 30.0

# connect.md §3.1: EA caps frames at 16 MiB.
MAX_FRAME_BYTES = 16 * 1024 * 1024
# connect.md §5.7: at most 16 appends in flight; per-append deadline 60 s + 1 s per 128 KiB.
MAX_INFLIGHT_APPENDS = 16
APPEND_TIMEOUT_BASE_S = 60.0
APPEND_TIMEOUT_PER_128K_S = 1.0

# Subprocess hygiene (design.md lesson 7): large line limit, staged shutdown.
PROCESS_LINE_LIMIT = 64 * 1024 * 1024
PROCESS_CLOSE_STDIN_WAIT_S = 2.0
PROCESS_TERMINATE_WAIT_S = 3.0
STDERR_TAIL_BYTES = 8192

# Characters per token for offline usage estimates when a transport reports no counts.
CHARS_PER_TOKEN_ESTIMATE = 4.0

# --- cursorpipe-server (integrations.md §4) ----------------------------------------------------
# SSE keep-alive comment while the model is silent (sse-starlette's default interval, §4.2).
SERVER_KEEPALIVE_S = 15.0
# SIGTERM: how long in-flight requests may finish before they are cancelled.
SERVER_DRAIN_TIMEOUT_S = 30.0
# Most parallel runs one chat request may ask for with `n`.
SERVER_MAX_N = 8
# How long a successful model list is reused by /v1/models.
SERVER_MODELS_CACHE_S = 300.0
# How often idle sessions are looked for (expiry itself is CURSORPIPE_SESSION_IDLE_S).
SERVER_SESSION_SWEEP_S = 30.0
# Retry-After sent with 429 (concurrency limit) and 503 (starting/draining) answers.
SERVER_BUSY_RETRY_AFTER_S = 1

# --- acp transport (acp.md §3.1, §4) -----------------------------------------------------------
# Restart of a crashed `agent acp`: wait base * 2^(n-1), capped, before the n-th consecutive restart.
ACP_RESTART_BACKOFF_BASE_S = 0.2
ACP_RESTART_BACKOFF_MAX_S = 5.0
# acp.md §3.1: "Failed to initialize session services" is transient; retry session/new this often.
ACP_SESSION_NEW_ATTEMPTS = 3
ACP_SESSION_NEW_RETRY_DELAY_S = 0.2
# acp.md §2: the longest wait for `authenticate` (a browser device flow may wait for a login).
ACP_AUTHENTICATE_TIMEOUT_S = 15.0
# acp.md §4: after session/cancel keep reading the session's updates until the prompt's answer
# (Cursor answered in 4 ms), at most this long.
ACP_CANCEL_GRACE_S = 5.0
# The default bound on one tool_handler call (CursorPipeConfig.tool_result_timeout_s).
TOOL_RESULT_TIMEOUT_S = 120.0
