"""The HTTP application: one router per domain, errors mapped in one place, docs served locally."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from karkhana import __version__
from karkhana.alarms import api as alarms
from karkhana.api import (
    assets,
    audit,
    auth,
    devices,
    edge,
    errors,
    live,
    system,
    telemetry,
    users,
    web,
)
from karkhana.api.deps import authorize
from karkhana.energy import api as energy
from karkhana.maintenance import api as maintenance
from karkhana.production import api as production
from karkhana.runtime import Runtime

WEB = Path(__file__).resolve().parent.parent / "web"
ROUTERS: tuple[APIRouter, ...] = tuple(
    m.router
    for m in (
        system,
        auth,
        devices,
        telemetry,
        edge,
        audit,
        users,
        live,
        web,
        alarms,
        production,
        maintenance,
        energy,
        assets,
    )
)
"""Every domain router, in matching order (the catch-all asset delete route comes last)."""


def route_table(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every API route, for the authorization policy check."""
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    routes += [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    return sorted({(method, r.path) for r in routes for method in r.methods or ()})


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(
        title="karkhana",
        version=__version__,
        description="Industrial IoT for small and medium factories: telemetry, assets, devices.",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(authorize)],
    )
    app.state.runtime = rt
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount(
        "/static/swagger",
        StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
        name="swagger",
    )
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="karkhana API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/static/index.html")

    return app
