"""Operator authentication: a bearer token from MODALHUB_ADMIN_TOKENS."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from modalhub.hub import HubDep


async def require_operator(request: Request, hub: HubDep) -> None:
    tokens = hub.settings.admin_tokens
    if not tokens:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "operator API is disabled: no MODALHUB_ADMIN_TOKENS configured",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented_bytes = presented.strip().encode()
    # Compare against every token so the time taken does not tell which one matched.
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented_bytes, token.encode())
    if scheme.lower() != "bearer" or not matched:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid operator bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


OperatorDep = Annotated[None, Depends(require_operator)]
