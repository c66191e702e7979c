from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from karkhana.api.deps import (
    SESSION_COOKIE,
    CurrentUser,
    RuntimeDep,
    bearer_token,
    client_address,
)
from karkhana.security.secrets import csrf_token

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)
    session: bool = Field(
        default=False,
        description="true for a browser: the token goes into an HttpOnly cookie instead of the"
        " answer, and every change must carry the returned csrf_token as X-CSRF-Token",
    )


class LoginResponse(BaseModel):
    token: str | None = Field(description="bearer token; null for a cookie session")
    csrf_token: str | None = None
    expires_ms: int
    username: str
    role: str
    sites: list[str]


class Me(BaseModel):
    username: str
    role: str
    sites: list[str]


@router.post("/login")
async def login(
    body: LoginRequest, request: Request, response: Response, rt: RuntimeDep
) -> LoginResponse:
    """Exchange a username and password for a bearer token or a browser session.

    Five wrong passwords in a row lock the account for 30 s, doubling with each further failure
    (at most 15 minutes); the answer is then 429 with Retry-After.
    """
    issued = await rt.users.login(body.username, body.password, source=client_address(request))
    user = issued.user
    csrf = None
    token: str | None = issued.token
    if body.session:
        response.set_cookie(
            SESSION_COOKIE,
            issued.token,
            max_age=rt.settings.token_ttl_hours * 3600,
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
            path="/",
        )
        csrf = csrf_token(rt.secret, issued.token)
        token = None
    return LoginResponse(
        token=token,
        csrf_token=csrf,
        expires_ms=issued.expires_ms,
        username=user.username,
        role=user.role.value,
        sites=sorted(user.sites),
    )


@router.post("/logout", status_code=204)
async def logout(request: Request, response: Response, rt: RuntimeDep, user: CurrentUser) -> None:
    """Revoke the token or session used for this request."""
    token = bearer_token(request) or request.cookies.get(SESSION_COOKIE)
    if token:
        await rt.users.logout(token, source=client_address(request))
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/me")
async def me(user: CurrentUser) -> Me:
    return Me(username=user.username, role=user.role.value, sites=sorted(user.sites))
