"""Credential discovery, API-key exchange and token refresh (connect.md §2), written once.

``TokenProvider(config, http)`` finds a credential in the documented order (api key → access
token → the Cursor CLI's stored login), exchanges API keys at ``/auth/exchange_user_api_key``,
refreshes by the SDK rule and shares one exchange among concurrent callers.
"""

from ._exchange import EXCHANGE_PATH, exchange_api_key
from ._jwt import jwt_claims
from ._provider import AccessToken, SharedTokens, TokenProvider, missing_credentials_error, refresh_at
from ._sources import Credential, cli_auth_paths, discover_credential

__all__ = [
    "EXCHANGE_PATH",
    "AccessToken",
    "Credential",
    "SharedTokens",
    "TokenProvider",
    "cli_auth_paths",
    "discover_credential",
    "exchange_api_key",
    "jwt_claims",
    "missing_credentials_error",
    "refresh_at",
]
