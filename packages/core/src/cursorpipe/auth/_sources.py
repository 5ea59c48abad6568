"""Where credentials come from, in the order of issue 3 / connect.md §2.1.

1. An API key: ``CursorPipeConfig.api_key`` (argument, ``CURSORPIPE_API_KEY`` or ``CURSOR_API_KEY``);
   exchanged for an access token (connect.md §2.2).
2. A ready access token: ``CursorPipeConfig.auth_token`` (``CURSOR_AUTH_TOKEN``); used as is and
   never refreshed, like the CLI does (connect.md §2.1).
3. The Cursor CLI's stored login: ``auth.json`` in the per-OS location of connect.md §2.1 (or the
   macOS keychain, read with ``security`` only on macOS). A stored ``apiKey`` is preferred because
   it can be re-exchanged; otherwise the stored ``accessToken`` (with its ``refreshToken``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .._redact import register_secret
from ..config import CursorPipeConfig

__all__ = ["Credential", "cli_auth_paths", "discover_credential", "reload_credential"]

log = logging.getLogger("cursorpipe.auth")

CredentialKind = Literal["api_key", "access_token"]


@dataclass(frozen=True)
class Credential:
    """A credential and where it came from. ``secret``/``refresh_token`` never appear in ``repr``."""

    kind: CredentialKind
    secret: str = field(repr=False)
    source: str
    refresh_token: str | None = field(default=None, repr=False)
    #: The Cursor CLI login file it was read from (re-read before a refresh: the CLI may have
    #: refreshed it), or ``None``.
    path: Path | None = None

    def __post_init__(self) -> None:
        register_secret(self.secret)
        register_secret(self.refresh_token)


def cli_auth_paths(
    *, platform: str | None = None, environ: dict[str, str] | None = None, home: Path | None = None
) -> list[Path]:
    """Candidate ``auth.json`` files of the Cursor CLI, most specific first (connect.md §2.1).

    macOS ``~/.cursor/auth.json``; Linux ``${XDG_CONFIG_HOME:-~/.config}/cursor/auth.json``;
    Windows ``%APPDATA%\\Cursor\\auth.json``. ``CURSOR_CONFIG_DIR`` (acp.md §7) is checked first.
    """
    env = os.environ if environ is None else environ
    plat = platform or sys.platform
    base = home or Path(env.get("HOME") or Path.home())
    paths: list[Path] = []
    if env.get("CURSOR_CONFIG_DIR"):
        paths.append(Path(env["CURSOR_CONFIG_DIR"]) / "auth.json")
    if plat == "darwin":
        paths.append(base / ".cursor" / "auth.json")
    elif plat.startswith("win"):
        appdata = env.get("APPDATA")
        if appdata:
            paths.append(Path(appdata) / "Cursor" / "auth.json")
    else:
        xdg = env.get("XDG_CONFIG_HOME") or str(base / ".config")
        paths.append(Path(xdg) / "cursor" / "auth.json")
    return paths


def _from_auth_json(path: Path) -> Credential | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # The file exists but cannot be used; say so (without content) and keep looking.
        log.warning("cursorpipe: ignoring unreadable Cursor CLI login file %s (%s)", path, type(exc).__name__)
        return None
    if not isinstance(data, dict):
        return None
    api_key = data.get("apiKey")
    access = data.get("accessToken")
    refresh = data.get("refreshToken")
    if isinstance(api_key, str) and api_key:
        return Credential("api_key", api_key, f"Cursor CLI login ({path})", path=path)
    if isinstance(access, str) and access:
        return Credential(
            "access_token",
            access,
            f"Cursor CLI login ({path})",
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            path=path,
        )
    return None


def _keychain(service: str) -> str | None:
    """One generic password from the macOS keychain (connect.md §2.1: account ``cursor-user``)."""
    security = shutil.which("security")
    if security is None:
        return None
    try:
        proc = subprocess.run(
            [security, "find-generic-password", "-a", "cursor-user", "-s", service, "-w"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = proc.stdout.strip()
    return value if proc.returncode == 0 and value else None


def _from_keychain() -> Credential | None:
    api_key = _keychain("cursor-api-key")
    if api_key:
        return Credential("api_key", api_key, "macOS keychain (cursor-api-key)")
    access = _keychain("cursor-access-token")
    if access:
        return Credential(
            "access_token", access, "macOS keychain (cursor-access-token)", _keychain("cursor-refresh-token")
        )
    return None


_KEYCHAIN_SOURCE = "macOS keychain"


def reload_credential(cred: Credential) -> Credential | None:
    """``cred`` as its store holds it now (the CLI may have refreshed or replaced the login), or
    ``None`` when it comes from a setting or the store no longer has a login."""
    if cred.path is not None:
        return _from_auth_json(cred.path)
    if cred.source.startswith(_KEYCHAIN_SOURCE):
        return _from_keychain()
    return None


def discover_credential(config: CursorPipeConfig, *, platform: str | None = None) -> Credential | None:
    """The first credential found in the documented order, or ``None``."""
    api_key = config.api_key.get_secret_value().strip()
    if api_key:
        return Credential("api_key", api_key, "api_key setting (CURSORPIPE_API_KEY / CURSOR_API_KEY)")
    token = config.auth_token.get_secret_value().strip()
    if token:
        return Credential("access_token", token, "auth_token setting (CURSOR_AUTH_TOKEN)")
    plat = platform or sys.platform
    if plat == "darwin" and os.environ.get("AGENT_CLI_CREDENTIAL_STORE", "") != "file":
        found = _from_keychain()
        if found is not None:
            return found
    for path in cli_auth_paths(platform=plat):
        found = _from_auth_json(path)
        if found is not None:
            return found
    return None
