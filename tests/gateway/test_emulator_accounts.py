"""The emulator serves several accounts, one per API key, and tells whose token a request carried
(what the gateway proof tests check per caller)."""

from __future__ import annotations

import httpx
from cursorpipe.testing.emulator import Emulator


async def test_each_key_is_its_own_account() -> None:
    accounts = {"crsr_alice": "alice", "crsr_bob": "bob"}
    async with Emulator(accounts=accounts) as emu, httpx.AsyncClient(base_url=emu.url) as http:
        seen = {}
        for key in ("crsr_alice", "crsr_bob", emu.api_key):
            r = await http.post(
                "/auth/exchange_user_api_key", headers={"authorization": f"Bearer {key}"}, json={}
            )
            assert r.status_code == 200
            seen[key] = emu.account_of(r.json()["accessToken"])
            refreshed = await http.post(
                "/auth/exchange_user_api_key",
                headers={"authorization": f"Bearer {r.json()['refreshToken']}"},
                json={},
            )
            assert emu.account_of(refreshed.json()["accessToken"]) == seen[key]
            models = await http.get("/v1/models", headers={"authorization": f"Bearer {key}"})
            assert models.status_code == 200
        assert seen == {"crsr_alice": "alice", "crsr_bob": "bob", emu.api_key: "user_emulated"}
        bad = await http.post(
            "/auth/exchange_user_api_key", headers={"authorization": "Bearer crsr_mallory"}, json={}
        )
        assert bad.status_code == 401
        assert emu.account_of("not.a.token") is None
