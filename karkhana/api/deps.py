"""Request dependencies: authentication (bearer token or session cookie) and authorization.

``authorize`` runs for every route: it finds the route's policy in
:data:`karkhana.security.policy.POLICIES` (no policy: refused), authenticates the caller and checks
role, token scopes and the site of the resource. Handlers then read the user with ``CurrentUser``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.routing import APIRoute

from karkhana.core.errors import Forbidden, InvalidPayload, KarkhanaError, Unauthorized
from karkhana.runtime import Runtime
from karkhana.security.policy import POLICIES, Policy, Role, Scope, allowed
from karkhana.security.secrets import csrf_token
from karkhana.security.users import User

SESSION_COOKIE = "karkhana_session"
CSRF_HEADER = "x-csrf-token"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return None


async def authenticate(request: Request, rt: Runtime) -> User:
    token = bearer_token(request)
    if token is None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise Unauthorized("sign in, or send 'Authorization: Bearer <token>'")
        if request.method in UNSAFE:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent, csrf_token(rt.secret, token)):
                raise Forbidden("missing or wrong X-CSRF-Token header")
    return await rt.users.authenticate(token)


def policy_of(request: Request) -> Policy | None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return None
    return POLICIES.get((request.method, route.path))


async def _body_field(request: Request, *names: str) -> tuple[str, str] | None:
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):
        return None  # the route's own validation answers with the reason
    if isinstance(body, dict):
        for name in names:
            value = body.get(name)
            if isinstance(value, str):
                return name, value
    return None


async def _body_sites(request: Request) -> list[str] | None:
    """The ``sites`` list of a JSON body (a user belongs to several sites), if it has one."""
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):
        return None
    sites = body.get("sites") if isinstance(body, dict) else None
    if isinstance(sites, list) and all(isinstance(s, str) for s in sites):
        return sites
    return None


def default_site(user: User) -> str | None:
    """The site a non-admin creates things in when the request names none: their only one."""
    return next(iter(user.sites)) if len(user.sites) == 1 else None


def one_site(user: User, sites: Iterable[str]) -> str | None:
    """The site that stands for a resource in several sites: one the user lacks, if any, so
    that access needs all of them (None, for a resource in no site: only admins)."""
    ordered = sorted(sites)
    return next((s for s in ordered if s not in user.sites), ordered[0] if ordered else None)


async def resource_site(request: Request, rt: Runtime, user: User) -> str | None:
    """The site of the resource a SITE-scoped request touches, from its path or body."""
    params = request.path_params
    if "device_id" in params:
        return await rt.devices.site_of(params["device_id"])
    if "machine_id" in params:
        return await rt.assets.site_of("machines", params["machine_id"])
    if "kind" in params and "item_id" in params:
        kind = params["kind"]
        if kind == "sites" and user.role is not Role.ADMIN:
            raise Forbidden("only admins delete sites")
        return await rt.assets.site_of(kind, params["item_id"])
    if "username" in params:
        return one_site(user, (await rt.users.get(params["username"])).sites)
    if "site_id" in params:
        return await rt.assets.site_of("sites", params["site_id"])
    sites = await _body_sites(request)
    if sites:
        return one_site(user, sites)
    found = await _body_field(request, "site_id", "area_id", "line_id")
    if found is None:
        return default_site(user)
    name, value = found
    table = {"site_id": "sites", "area_id": "areas", "line_id": "lines"}[name]
    return await rt.assets.site_of(table, value)


async def authorize(request: Request) -> None:
    rt = runtime(request)
    policy = policy_of(request)
    if policy is None:
        raise Forbidden("this route has no access policy")
    if policy.scope in (Scope.PUBLIC, Scope.DEVICE):
        return
    user = await authenticate(request, rt)
    request.state.user = user
    site = None
    if policy.scope is Scope.SITE and user.role is not Role.ADMIN:
        try:
            site = await resource_site(request, rt, user)
        except KarkhanaError as exc:
            if isinstance(exc, Forbidden):
                raise
            # A missing or malformed resource is reported by the handler (404, 400), but only to
            # someone who could act on some site at all.
            if not allowed(
                user.role, user.sites, Policy(Scope.GLOBAL, policy.permission), None, user.scopes
            ):
                raise Forbidden(f"role {user.role} may not do this") from None
            if isinstance(exc, InvalidPayload):
                return
            raise
    if not allowed(user.role, user.sites, policy, site, user.scopes):
        raise Forbidden(
            f"role {user.role} may not do this"
            if site is None or site in user.sites or policy.permission is None
            else "this belongs to a site you do not have access to"
        )


def current_user(request: Request) -> User:
    user: User | None = getattr(request.state, "user", None)
    if user is None:
        raise Unauthorized("not signed in")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def client_address(request: Request) -> str | None:
    """The caller's address, for the audit log (a reverse proxy's own, unless uvicorn is told
    to trust its forwarding headers)."""
    return request.client.host if request.client else None


Source = Annotated[str | None, Depends(client_address)]


def visible_sites(user: User) -> frozenset[str] | None:
    """None for admins (everything), else the user's sites."""
    return None if user.role is Role.ADMIN else user.sites
