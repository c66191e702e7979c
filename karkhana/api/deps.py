"""Request dependencies: the runtime, the signed-in user and role checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from karkhana.core.errors import Forbidden, Unauthorized
from karkhana.runtime import Runtime
from karkhana.security.users import Role, User

bearer = HTTPBearer(auto_error=False, description="token from POST /api/v1/auth/login")


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    return credentials.credentials


async def current_user(rt: RuntimeDep, credentials: Credentials) -> User:
    return await rt.users.authenticate(bearer_token(credentials))


CurrentUser = Annotated[User, Depends(current_user)]

WRITERS = (Role.ADMIN, Role.MANAGER, Role.ENGINEER)


def require(*roles: Role) -> Callable[[User], Awaitable[User]]:
    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden(f"role {user.role} may not do this")
        return user

    return check
