from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from karkhana.api.deps import Credentials, CurrentUser, RuntimeDep, bearer_token

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class LoginResponse(BaseModel):
    token: str
    expires_ms: int
    username: str
    role: str


class Me(BaseModel):
    username: str
    role: str


@router.post("/login")
async def login(body: LoginRequest, rt: RuntimeDep) -> LoginResponse:
    """Exchange a username and password for a bearer token."""
    issued = await rt.users.login(body.username, body.password)
    return LoginResponse(
        token=issued.token,
        expires_ms=issued.expires_ms,
        username=issued.user.username,
        role=issued.user.role.value,
    )


@router.post("/logout", status_code=204)
async def logout(rt: RuntimeDep, user: CurrentUser, credentials: Credentials) -> None:
    """Revoke the token used for this request."""
    await rt.users.logout(bearer_token(credentials))


@router.get("/me")
async def me(user: CurrentUser) -> Me:
    return Me(username=user.username, role=user.role.value)
