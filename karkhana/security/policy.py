"""Who may do what: roles grant permissions, sites bound where, every route has a policy.

The table here is the single place that decides access. The API looks every request's route up
in it, and a test walks the application's route table so that a route without a policy fails the
suite instead of being open by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    ENGINEER = "engineer"
    OPERATOR = "operator"
    VIEWER = "viewer"


class Permission(StrEnum):
    READ = "read"
    """See data, machines and devices."""
    OPERATE = "operate"
    """Shop-floor actions: assign downtime reasons, acknowledge alarms."""
    CONFIGURE = "configure"
    """Change devices, assets, rules and templates."""
    MANAGE = "manage"
    """Manage the people of one's own sites."""
    ADMINISTER = "administer"
    """Everything: all sites, settings, audit log."""


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.OPERATE}),
    Role.ENGINEER: frozenset({Permission.READ, Permission.OPERATE, Permission.CONFIGURE}),
    Role.MANAGER: frozenset(
        {Permission.READ, Permission.OPERATE, Permission.CONFIGURE, Permission.MANAGE}
    ),
    Role.ADMIN: frozenset(Permission),
}


class Scope(StrEnum):
    PUBLIC = "public"
    """No login (health, login itself)."""
    DEVICE = "device"
    """Authenticated by a device token, not a user (telemetry ingestion)."""
    USER = "user"
    """Any signed-in user, about themselves (who am I, sign out)."""
    GLOBAL = "global"
    """Needs the permission; not tied to a site."""
    SITE = "site"
    """Needs the permission on the site of the resource named in the path or body."""
    LISTED = "listed"
    """A list filtered to the user's sites by the handler."""


@dataclass(frozen=True, slots=True)
class Policy:
    scope: Scope
    permission: Permission | None = None


PUBLIC = Policy(Scope.PUBLIC)
DEVICE = Policy(Scope.DEVICE)
SELF = Policy(Scope.USER)


def site(permission: Permission) -> Policy:
    return Policy(Scope.SITE, permission)


def listed(permission: Permission = Permission.READ) -> Policy:
    return Policy(Scope.LISTED, permission)


def global_(permission: Permission) -> Policy:
    return Policy(Scope.GLOBAL, permission)


R, OP, C, M, A = (
    Permission.READ,
    Permission.OPERATE,
    Permission.CONFIGURE,
    Permission.MANAGE,
    Permission.ADMINISTER,
)

POLICIES: dict[tuple[str, str], Policy] = {
    ("GET", "/"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/api/v1/health"): PUBLIC,
    ("POST", "/api/v1/auth/login"): PUBLIC,
    ("POST", "/api/v1/auth/logout"): SELF,
    ("GET", "/api/v1/auth/me"): SELF,
    ("GET", "/api/v1/ingest/stats"): global_(A),
    ("GET", "/api/v1/devices"): listed(),
    ("POST", "/api/v1/devices"): site(C),
    ("GET", "/api/v1/devices/{device_id}"): site(R),
    ("GET", "/api/v1/devices/{device_id}/keys"): site(R),
    ("POST", "/api/v1/devices/{device_id}/rotate-token"): site(C),
    ("DELETE", "/api/v1/devices/{device_id}"): site(C),
    ("POST", "/api/v1/telemetry/{device_id}"): DEVICE,
    ("POST", "/api/v1/edge/batches"): DEVICE,
    ("GET", "/api/v1/telemetry/{device_id}/latest"): site(R),
    ("GET", "/api/v1/telemetry/{device_id}/{key:path}"): site(R),
    ("GET", "/api/v1/templates"): global_(R),
    ("GET", "/api/v1/templates/{template_id}"): global_(R),
    ("GET", "/api/v1/assets"): listed(),
    ("POST", "/api/v1/sites"): global_(A),
    ("POST", "/api/v1/areas"): site(C),
    ("POST", "/api/v1/lines"): site(C),
    ("POST", "/api/v1/machines"): site(C),
    ("GET", "/api/v1/machines/{machine_id}"): site(R),
    ("GET", "/api/v1/machines/{machine_id}/signals/{signal}"): site(R),
    ("DELETE", "/api/v1/{kind}/{item_id}"): site(C),
    ("GET", "/api/v1/audit"): global_(A),
    ("GET", "/api/v1/audit/verify"): global_(A),
    ("GET", "/api/v1/users"): listed(M),
    ("POST", "/api/v1/users"): site(M),
    ("DELETE", "/api/v1/users/{username}"): site(M),
    ("PUT", "/api/v1/users/{username}/sites"): global_(A),
    ("POST", "/api/v1/users/{username}/password"): global_(A),
    ("GET", "/api/v1/tokens"): SELF,
    ("POST", "/api/v1/tokens"): SELF,
    ("DELETE", "/api/v1/tokens/{token_id}"): SELF,
    ("GET", "/api/v1/live"): listed(),
    ("GET", "/api/v1/web/session"): SELF,
}


def granted(role: Role, scopes: frozenset[Permission] | None = None) -> frozenset[Permission]:
    """What a role may do, narrowed to an API token's scopes when there are some."""
    return ROLE_PERMISSIONS[role] if scopes is None else ROLE_PERMISSIONS[role] & scopes


def may_assign(role: Role, scopes: frozenset[Permission] | None, new_role: Role) -> bool:
    """Whether someone may give ``new_role`` to a user (or manage a user who has it).

    Nobody grants more than they have, and only administrators make people who manage others:
    a manager creates engineers, operators and viewers, never another manager.
    """
    have = granted(role, scopes)
    give = ROLE_PERMISSIONS[new_role]
    return give <= have and (Permission.MANAGE not in give or Permission.ADMINISTER in have)


def allowed(
    role: Role,
    user_sites: frozenset[str],
    policy: Policy,
    resource_site: str | None = None,
    scopes: frozenset[Permission] | None = None,
) -> bool:
    """Whether a user may use a route; pure, so the whole matrix is easy to test.

    ``resource_site`` is the site of the resource for SITE policies (None when the resource has
    no site yet: only admins may touch those). ``scopes`` narrows an API token to fewer
    permissions than its user's role has.
    """
    if policy.scope in (Scope.PUBLIC, Scope.DEVICE, Scope.USER):
        return True
    assert policy.permission is not None
    if policy.permission not in granted(role, scopes):
        return False
    if policy.scope is not Scope.SITE or role is Role.ADMIN:
        return True
    return resource_site is not None and resource_site in user_sites
