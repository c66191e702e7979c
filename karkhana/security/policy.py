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
    ("GET", "/api/v1/edge/rules"): DEVICE,
    ("POST", "/api/v1/edge/alarms"): DEVICE,
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
    # alarms (alarms/api.py): single alarms and rules are checked against the caller's sites by
    # the service (another site's answers 404; changing a rule there 403)
    ("GET", "/api/v1/alarms"): listed(),
    ("GET", "/api/v1/alarms/stats"): listed(),
    ("GET", "/api/v1/alarms/{alarm_id}"): global_(R),
    ("POST", "/api/v1/alarms/{alarm_id}/ack"): global_(OP),
    ("POST", "/api/v1/alarms/{alarm_id}/shelve"): global_(OP),
    ("GET", "/api/v1/rules"): listed(),
    ("POST", "/api/v1/rules"): global_(C),
    ("GET", "/api/v1/rules/{rule_id}"): global_(R),
    ("PUT", "/api/v1/rules/{rule_id}"): global_(C),
    ("DELETE", "/api/v1/rules/{rule_id}"): global_(C),
    ("GET", "/api/v1/notify/channels"): global_(A),
    ("PUT", "/api/v1/notify/channels/{channel_id}"): global_(A),
    ("DELETE", "/api/v1/notify/channels/{channel_id}"): global_(A),
    ("GET", "/api/v1/notify/recipients"): global_(A),
    ("PUT", "/api/v1/notify/recipients/{recipient_id}"): global_(A),
    ("DELETE", "/api/v1/notify/recipients/{recipient_id}"): global_(A),
    ("GET", "/api/v1/notify/outbox"): global_(A),
    # production (production/api.py): lists are filtered to the caller's sites; a stop's site is
    # checked by the handler (403 for another site's stop), as the path names only the stop
    ("GET", "/api/v1/production/overview"): listed(),
    ("GET", "/api/v1/production/machines/{machine_id}/states"): site(R),
    ("POST", "/api/v1/production/machines/{machine_id}/rebuild"): site(C),
    ("GET", "/api/v1/production/oee"): listed(),
    ("GET", "/api/v1/production/stops"): listed(),
    ("PUT", "/api/v1/production/stops/{stop_id}/reason"): global_(OP),
    ("GET", "/api/v1/production/reasons"): global_(R),
    ("GET", "/api/v1/production/shifts"): listed(),
    ("GET", "/api/v1/production/pareto"): listed(),
    ("GET", "/api/v1/production/reports/shift.csv"): listed(),
    ("GET", "/api/v1/production/reports/shift.pdf"): listed(),
    ("GET", "/api/v1/production/reports/daily.csv"): listed(),
    ("GET", "/api/v1/production/reports/daily.pdf"): listed(),
    # maintenance (maintenance/api.py): everything about one machine names it in the path, so
    # its site decides; work orders and schedules are looked up within that machine
    ("GET", "/api/v1/maintenance/health"): listed(),
    ("GET", "/api/v1/maintenance/machines/{machine_id}/health"): site(R),
    ("GET", "/api/v1/maintenance/machines/{machine_id}/reliability"): site(R),
    ("GET", "/api/v1/maintenance/work-orders"): listed(),
    ("GET", "/api/v1/maintenance/machines/{machine_id}/work-orders"): site(R),
    ("POST", "/api/v1/maintenance/machines/{machine_id}/work-orders"): site(OP),
    ("GET", "/api/v1/maintenance/machines/{machine_id}/work-orders/{item_id}"): site(R),
    ("PATCH", "/api/v1/maintenance/machines/{machine_id}/work-orders/{item_id}"): site(OP),
    ("DELETE", "/api/v1/maintenance/machines/{machine_id}/work-orders/{item_id}"): site(C),
    ("GET", "/api/v1/maintenance/schedules/due"): listed(),
    ("GET", "/api/v1/maintenance/machines/{machine_id}/schedules"): site(R),
    ("POST", "/api/v1/maintenance/machines/{machine_id}/schedules"): site(C),
    ("POST", "/api/v1/maintenance/machines/{machine_id}/schedules/{item_id}/done"): site(OP),
    ("DELETE", "/api/v1/maintenance/machines/{machine_id}/schedules/{item_id}"): site(C),
    ("POST", "/api/v1/maintenance/vibration/{device_id}"): DEVICE,
    ("GET", "/api/v1/maintenance/machines/{machine_id}/rul"): site(R),
    ("POST", "/api/v1/maintenance/machines/{machine_id}/rul/work-order"): site(OP),
    # trained models belong to a machine template, not to a site
    ("GET", "/api/v1/maintenance/models"): global_(R),
    ("GET", "/api/v1/maintenance/models/{template}"): global_(R),
    ("POST", "/api/v1/maintenance/models/{template}/train"): global_(C),
    ("POST", "/api/v1/maintenance/models/{template}/score"): global_(R),
    # energy (energy/api.py): every route names its site
    ("GET", "/api/v1/energy/sites/{site_id}/summary"): site(R),
    ("GET", "/api/v1/energy/sites/{site_id}/meters"): site(R),
    ("GET", "/api/v1/energy/sites/{site_id}/series"): site(R),
    ("GET", "/api/v1/energy/sites/{site_id}/outages"): site(R),
    ("GET", "/api/v1/energy/sites/{site_id}/bill"): site(R),
    ("POST", "/api/v1/energy/sites/{site_id}/bill/compare"): site(OP),
    ("GET", "/api/v1/energy/sites/{site_id}/advice"): site(R),
    ("GET", "/api/v1/energy/sites/{site_id}/intensity"): site(R),
    ("GET", "/api/v1/energy/sites/{site_id}/report.csv"): site(R),
    ("GET", "/api/v1/energy/sites/{site_id}/report.pdf"): site(R),
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
