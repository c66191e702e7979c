"""What the dashboard asks of the server besides the domain APIs: the browser session."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from karkhana.api.deps import SESSION_COOKIE, CurrentUser, RuntimeDep, bearer_token
from karkhana.security.secrets import csrf_token

router = APIRouter(prefix="/api/v1/web", tags=["web"])


class Session(BaseModel):
    username: str
    role: str
    sites: list[str]
    csrf_token: str | None = Field(
        description="the X-CSRF-Token for changes in this cookie session; null with a bearer token"
    )


@router.get("/session")
async def session(request: Request, rt: RuntimeDep, user: CurrentUser) -> Session:
    """Who is signed in and the CSRF token of their cookie session.

    A page opened in a new tab has the cookie but not the token the login answer carried; it
    reads it here (same origin only: no other site can read this answer).
    """
    cookie = None if bearer_token(request) else request.cookies.get(SESSION_COOKIE)
    return Session(
        username=user.username,
        role=user.role.value,
        sites=sorted(user.sites),
        csrf_token=csrf_token(rt.secret, cookie) if cookie else None,
    )
