"""The real-time profile API on a real server: events sent through collection show up in the profile read by
identifier; only the read token opens it; merges, lineage, paging, bulk lookups and every bad request."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import httpx

from opencdp.config import Settings
from tests.api.test_collection import basic
from tests.helpers import ThreadedServer


def _wait(get: Any, until: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        answer = get()
        if until(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_profiles_by_identifier_with_only_the_read_token(duck_settings: Settings) -> None:
    with ThreadedServer(duck_settings) as srv, contextlib.ExitStack() as stack:
        key = srv.admin.create_source("web", "web").write_key
        read = (duck_settings.data_dir / "read_token").read_text().strip()
        assert read.startswith("rd_") and read != srv.admin.client.headers["Authorization"].split()[1]
        api = stack.enter_context(httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {read}"}))

        def send(*messages: dict[str, Any]) -> None:
            batch = [{"messageId": str(uuid.uuid4()), **m} for m in messages]
            assert httpx.post(f"{srv.url}/v1/batch", json={"batch": batch}, headers=basic(key)).status_code == 200

        send({"type": "track", "anonymousId": "anon-1", "event": "Order Completed",
              "properties": {"order_id": "A1", "total": 40, "currency": "USD"}})  # fmt: skip
        anon = _wait(lambda: api.get("/v1/profiles/anonymous_id:anon-1"), lambda r: r.status_code == 200).json()
        assert anon["computed"]["gross_revenue"] == 40.0

        send({"type": "identify", "userId": "u-7", "anonymousId": "anon-1", "traits": {"email": "Kim@Mail.com"}},
             {"type": "track", "userId": "u-7", "event": "Order Completed",
              "properties": {"order_id": "A2", "total": 60, "currency": "USD"}})  # fmt: skip
        doc = _wait(lambda: api.get("/v1/profiles/email:kim@mail.com"),
                    lambda r: r.status_code == 200 and r.json()["computed"]["order_count"] == 2).json()  # fmt: skip
        assert doc["computed"]["gross_revenue"] == 100.0 and doc["traits"] == {"email": "kim@mail.com"}
        assert {"type": "user_id", "value": "u-7"} in doc["identities"]
        assert api.get(f"/v1/profiles/{doc['profile_id']}").json()["profile_id"] == doc["profile_id"]
        assert api.get("/v1/profiles/email: Kim@MAIL.com").json()["profile_id"] == doc["profile_id"]
        if anon["profile_id"] != doc["profile_id"]:  # the anonymous profile was absorbed: it resolves on
            assert api.get(f"/v1/profiles/{anon['profile_id']}").json()["profile_id"] == doc["profile_id"]

        # the same document as the admin API's view of it
        admin_view = srv.admin.client.get("/admin/v1/profiles/email:kim@mail.com").json()
        assert {k: v for k, v in admin_view.items() if k != "timeline_next"} == {
            k: v for k, v in doc.items() if k != "timeline_next"
        }
        lineage = api.get("/v1/profiles/email:kim@mail.com", params={"lineage": "true"}).json()
        assert lineage["traits"]["email"]["rule"] == "verified, most_recent"
        assert lineage["traits"]["email"]["source_id"] and lineage["traits"]["email"]["message_id"]

        first = api.get("/v1/profiles/email:kim@mail.com", params={"limit": 1}).json()
        assert len(first["timeline"]) == 1 and first["timeline_next"] == first["timeline"][0]["seq"]
        rest = api.get("/v1/profiles/email:kim@mail.com", params={"limit": 5, "before": first["timeline_next"]})
        assert [r["seq"] for r in rest.json()["timeline"]] == [r["seq"] for r in doc["timeline"][1:5]]

        bulk = api.post("/v1/profiles/lookup", json={"refs": ["user_id:u-7", "email:nobody@x.org"]}).json()
        assert bulk["profiles"][0]["profile_id"] == doc["profile_id"] and bulk["profiles"][1] is None

        # who may read, and every bad request
        admin_token = srv.admin.client.headers["Authorization"]
        for headers in ({}, {"Authorization": f"Bearer {key}"}, basic(key), {"Authorization": admin_token},
                        {"Authorization": f"Bearer {read}x"}):  # fmt: skip
            refused = httpx.get(f"{srv.url}/v1/profiles/user_id:u-7", headers=headers)
            assert refused.status_code == 401 and refused.json()["code"] == "invalid_read_token"
        assert api.get("/v1/profiles/user_id:nobody").status_code == 404
        assert api.get("/v1/profiles/").status_code == 400
        assert api.get("/v1/profiles/" + "x" * 2000).status_code == 400
        assert api.get("/v1/profiles/user_id:u-7", params={"limit": "many"}).status_code == 400
        assert api.delete("/v1/profiles/user_id:u-7").status_code == 405
        assert api.get("/v1/profiles/lookup").status_code == 405
        assert api.post("/v1/profiles/lookup", content=b"{not json").status_code == 400
        assert api.post("/v1/profiles/lookup", json={"refs": "user_id:u-7"}).status_code == 400
        assert api.post("/v1/profiles/lookup", json={"refs": ["a"] * 101}).status_code == 413
        assert api.post("/v1/profiles/lookup", content=b"[" + b" " * 70_000 + b"]").status_code == 413
        # a write key still only writes: the read token does not open collection
        assert httpx.post(f"{srv.url}/v1/track", json={"userId": "x", "event": "E"},
                          headers={"Authorization": f"Bearer {read}"}).status_code == 401  # fmt: skip
