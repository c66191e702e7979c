"""The HTTP application: one router per domain, errors mapped in one place, docs served locally."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from karkhana import __version__
from karkhana.api import assets, auth, devices, errors, system, telemetry
from karkhana.runtime import Runtime

WEB = Path(__file__).resolve().parent.parent / "web"


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(
        title="karkhana",
        version=__version__,
        description="Industrial IoT for small and medium factories: telemetry, assets, devices.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = rt
    errors.install(app)
    for module in (system, auth, devices, telemetry, assets):
        app.include_router(module.router)
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
