"""The OpenAPI document describes the callback route too, with references that resolve."""

from __future__ import annotations

import json

import httpx


async def test_callback_route_is_documented(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/api/v3/webhooks/modal/completion"]["post"]
    assert {"202", "200", "400", "401", "413", "415", "422", "503"} <= set(operation["responses"])
    components = schema["components"]["schemas"]
    for ref in set(_refs(schema)):
        assert ref.removeprefix("#/components/schemas/") in components, ref


def _refs(node: object) -> list[str]:
    text = json.dumps(node)
    return [part.split('"')[0] for part in text.split('"$ref": "')[1:]]
