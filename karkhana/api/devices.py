from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from pydantic import BaseModel, Field

from karkhana.api.deps import CurrentUser, RuntimeDep, Source, default_site, visible_sites
from karkhana.core.errors import NotFound
from karkhana.security.devices import Device

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])


class DeviceOut(BaseModel):
    id: str
    name: str
    template: str | None
    created_ms: int
    token_changed_ms: int
    site_id: str | None
    parent_id: str | None

    @classmethod
    def of(cls, d: Device) -> DeviceOut:
        return cls(
            id=d.id,
            name=d.name,
            template=d.template,
            created_ms=d.created_ms,
            token_changed_ms=d.token_changed_ms,
            site_id=d.site_id,
            parent_id=d.parent_id,
        )


class DeviceCreate(BaseModel):
    id: str = Field(min_length=1, max_length=64, examples=["loom-01"])
    name: str | None = Field(default=None, max_length=200)
    template: str | None = Field(default=None, max_length=64)
    site_id: str | None = Field(
        default=None, max_length=64, description="default: the caller's site when they have one"
    )
    parent_id: str | None = Field(
        default=None,
        max_length=64,
        description="a gateway (an existing device) that may also publish for this device",
    )


class DeviceCredentials(BaseModel):
    id: str
    token: str = Field(description="shown only once; store it in the device")
    mqtt_username: str
    mqtt_topic: str


def _credentials(device_id: str, token: str) -> DeviceCredentials:
    return DeviceCredentials(
        id=device_id,
        token=token,
        mqtt_username=device_id,
        mqtt_topic=f"karkhana/{device_id}/telemetry",
    )


@router.get("")
async def list_devices(rt: RuntimeDep, user: CurrentUser) -> list[DeviceOut]:
    sites = visible_sites(user)
    return [DeviceOut.of(d) for d in await rt.devices.list() if sites is None or d.site_id in sites]


@router.post("", status_code=201)
async def create_device(
    body: DeviceCreate, rt: RuntimeDep, user: CurrentUser, source: Source
) -> DeviceCredentials:
    """Register a device. The answer holds its token, which is never shown again."""
    if body.template is not None and body.template not in rt.assets.templates:
        raise NotFound(f"no machine template {body.template}")
    site_id = body.site_id or default_site(user)
    sites = visible_sites(user)
    if (
        body.parent_id is not None
        and sites is not None
        and await rt.devices.site_of(body.parent_id) not in sites
    ):
        raise NotFound(f"no device {body.parent_id}")
    device, token = await rt.devices.create(
        body.id, body.name, body.template, site_id, parent_id=body.parent_id
    )
    await rt.audit.record(
        user.username, "device.create", f"device:{device.id}", after=asdict(device), source=source
    )
    return _credentials(device.id, token)


@router.get("/{device_id}")
async def get_device(device_id: str, rt: RuntimeDep, user: CurrentUser) -> DeviceOut:
    return DeviceOut.of(await rt.devices.get(device_id))


@router.get("/{device_id}/keys")
async def device_keys(device_id: str, rt: RuntimeDep, user: CurrentUser) -> list[str]:
    """Every telemetry key this device has sent."""
    await rt.devices.get(device_id)
    return await rt.store.keys(device_id)


@router.post("/{device_id}/rotate-token")
async def rotate_token(
    device_id: str, rt: RuntimeDep, user: CurrentUser, source: Source
) -> DeviceCredentials:
    """Issue a new token; the old one stops working and its MQTT connections are closed."""
    before = await rt.devices.get(device_id)
    token = await rt.devices.rotate(device_id)
    await rt.audit.record(
        user.username,
        "device.rotate_token",
        f"device:{device_id}",
        before=asdict(before),
        after=asdict(await rt.devices.get(device_id)),
        source=source,
    )
    return _credentials(device_id, token)


@router.delete("/{device_id}", status_code=204)
async def delete_device(
    device_id: str, rt: RuntimeDep, user: CurrentUser, source: Source, purge: bool = False
) -> None:
    """Remove a device; with ``purge=true`` its stored telemetry is deleted too."""
    before = await rt.devices.get(device_id)
    await rt.devices.delete(device_id)
    target = f"device:{device_id}"
    await rt.audit.record(
        user.username, "device.delete", target, before=asdict(before), source=source
    )
    if purge:
        await rt.store.delete_device(device_id)
        await rt.audit.record(user.username, "telemetry.purge", target, source=source)
