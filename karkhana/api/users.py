"""People and their API tokens.

Admins manage everyone; managers manage engineers, operators and viewers of their own sites (the
site part is decided by the route policies, the role part here). Every signed-in user manages
their own API tokens, never with more permissions than they have.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from karkhana.api.deps import CurrentUser, RuntimeDep, Source, default_site
from karkhana.core.errors import Conflict, Forbidden, InvalidPayload
from karkhana.security.policy import Permission, Role, granted, may_assign
from karkhana.security.users import ApiToken, User

router = APIRouter(tags=["users"])
DAY_MS = 86_400_000


class UserOut(BaseModel):
    username: str
    role: Role
    sites: list[str]

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls(username=u.username, role=u.role, sites=sorted(u.sites))


class UserCreate(BaseModel):
    username: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[\w.@+-]+$",
        examples=["asha"],
        description="letters (any script), digits and . _ @ + -",
    )
    password: str = Field(min_length=10, max_length=256)
    role: Role = Role.VIEWER
    sites: list[str] = Field(
        default=[],
        max_length=100,
        description="default for a manager with one site: that site",
    )


class SitesUpdate(BaseModel):
    sites: list[str] = Field(max_length=100)


class PasswordUpdate(BaseModel):
    password: str = Field(min_length=10, max_length=256)


class TokenOut(BaseModel):
    id: str
    name: str
    username: str
    scopes: list[Permission] | None = Field(description="null: everything the user's role may do")
    created_ms: int
    expires_ms: int

    @classmethod
    def of(cls, t: ApiToken) -> TokenOut:
        return cls(
            id=t.id,
            name=t.name,
            username=t.username,
            scopes=None if t.scopes is None else [Permission(s) for s in t.scopes],
            created_ms=t.created_ms,
            expires_ms=t.expires_ms,
        )


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["erp-export"])
    scopes: list[Permission] | None = Field(
        default=None,
        examples=[["read"]],
        description="a subset of what you may do; null: all of it",
    )
    ttl_days: int = Field(default=90, ge=1, le=3660)


class TokenCreated(TokenOut):
    token: str = Field(description="shown only once; send it as 'Authorization: Bearer <token>'")


def _is_admin(user: User) -> bool:
    return Permission.ADMINISTER in granted(user.role, user.scopes)


def _check_role(user: User, role: Role) -> None:
    if not may_assign(user.role, user.scopes, role):
        raise Forbidden(f"role {user.role} may not manage users with role {role}")


@router.get("/api/v1/users")
async def list_users(rt: RuntimeDep, user: CurrentUser) -> list[UserOut]:
    """Everyone for an admin; for a manager, the users all of whose sites are the manager's."""
    everyone = await rt.users.everyone()
    if not _is_admin(user):
        everyone = [u for u in everyone if u.sites and u.sites <= user.sites]
    return [UserOut.of(u) for u in everyone]


@router.post("/api/v1/users", status_code=201)
async def create_user(
    body: UserCreate, rt: RuntimeDep, user: CurrentUser, source: Source
) -> UserOut:
    _check_role(user, body.role)
    sites = body.sites
    if not sites and not _is_admin(user):
        site = default_site(user)
        if site is None:
            raise InvalidPayload("sites: name the sites of the new user")
        sites = [site]
    created = await rt.users.create(
        body.username, body.password, body.role, sites, actor=user.username, source=source
    )
    return UserOut.of(created)


@router.delete("/api/v1/users/{username}", status_code=204)
async def delete_user(username: str, rt: RuntimeDep, user: CurrentUser, source: Source) -> None:
    """Remove a user; their sessions and API tokens stop working at once."""
    target = await rt.users.get(username)
    _check_role(user, target.role)
    if target.id == user.id:
        raise Conflict("you cannot delete yourself")
    await rt.users.delete(username, actor=user.username, source=source)


@router.put("/api/v1/users/{username}/sites")
async def set_sites(
    username: str, body: SitesUpdate, rt: RuntimeDep, user: CurrentUser, source: Source
) -> UserOut:
    await rt.users.set_sites(username, body.sites, actor=user.username, source=source)
    return UserOut.of(await rt.users.get(username))


@router.post("/api/v1/users/{username}/password", status_code=204)
async def set_password(
    username: str, body: PasswordUpdate, rt: RuntimeDep, user: CurrentUser, source: Source
) -> None:
    """Set a new password; the user's sessions and API tokens are revoked."""
    await rt.users.set_password(username, body.password, actor=user.username, source=source)


@router.get("/api/v1/tokens")
async def list_tokens(rt: RuntimeDep, user: CurrentUser) -> list[TokenOut]:
    """Your API tokens that have not expired (an admin sees everyone's); never the tokens."""
    tokens = await rt.users.api_tokens(None if _is_admin(user) else user)
    return [TokenOut.of(t) for t in tokens]


@router.post("/api/v1/tokens", status_code=201)
async def create_token(
    body: TokenCreate, rt: RuntimeDep, user: CurrentUser, source: Source
) -> TokenCreated:
    """A token for an integration, limited to ``scopes``. The answer is the only time the token
    itself is shown."""
    have = granted(user.role, user.scopes)
    scopes = None if body.scopes is None else frozenset(body.scopes)
    if scopes is None and user.scopes is not None:
        scopes = have  # a scoped token makes tokens no wider than itself
    if scopes is not None and not scopes:
        raise InvalidPayload("scopes: name at least one permission, or null for all of yours")
    if scopes is not None and not scopes <= have:
        extra = ", ".join(sorted(scopes - have))
        raise Forbidden(f"you may not grant {extra}")
    info, token = await rt.users.create_api_token(
        user, body.name, scopes, body.ttl_days * DAY_MS, source=source
    )
    return TokenCreated(token=token, **TokenOut.of(info).model_dump())


@router.delete("/api/v1/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: str, rt: RuntimeDep, user: CurrentUser, source: Source) -> None:
    """Revoke one of your tokens (an admin: anyone's); it stops working at once."""
    await rt.users.revoke_api_token(
        token_id, None if _is_admin(user) else user, actor=user.username, source=source
    )
