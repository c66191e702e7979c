"""The dashboard's files: every asset local and served, modules resolvable, catalogues complete."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

STATIC = Path(__file__).resolve().parents[2] / "karkhana" / "web" / "static"
OWN = [
    p for p in STATIC.rglob("*") if p.suffix in {".html", ".js", ".css"} and "vendor" not in p.parts
]
DYNAMIC_FAMILIES = {
    "state.": {"running", "idle", "stopped", "fault", "planned_stop", "no_data"},
    "role.": {"admin", "manager", "engineer", "operator", "viewer"},
    "severity.": {"info", "warning", "critical"},
    "alarm_state.": {"raised", "acknowledged", "cleared", "shelved"},
    "rules.op.": {">", ">=", "<", "<="},
    "range.": {"1h", "8h", "24h", "7d", "30d"},
}
ARABIC = re.compile(r"[\u0600-\u06FF]")


def catalogue(code: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((STATIC / "i18n" / f"{code}.json").read_text("utf-8"))
    return data


def used_keys() -> set[str]:
    keys: set[str] = set()
    for path in OWN:
        text = path.read_text("utf-8")
        keys |= set(re.findall(r"(?<![\w.])t\(\"([a-z_.0-9]+)\"", text))
        keys |= set(re.findall(r"data-i18n(?:-[a-z]+)?=\"([^\"]+)\"", text))
        keys |= set(re.findall(r"\[\"([a-z_]+\.[a-z_.]+)\",", text))  # [key, value] tables
    for prefix, names in DYNAMIC_FAMILIES.items():
        keys |= {prefix + n for n in names}
    return keys


def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    en, ur = catalogue("en"), catalogue("ur")
    assert set(en) == set(ur)
    for key in en:
        assert set(re.findall(r"\{\w+\}", en[key])) == set(re.findall(r"\{\w+\}", ur[key])), key


def test_every_text_the_pages_use_is_in_the_catalogues() -> None:
    missing = used_keys() - set(catalogue("en"))
    assert not missing, f"keys used but not translated: {sorted(missing)}"


def test_urdu_catalogue_is_urdu() -> None:
    ur = catalogue("ur")
    not_urdu = [k for k, v in ur.items() if not ARABIC.search(v)]
    assert not not_urdu
    assert ur["state.running"] == "چل رہی ہے"


def test_no_asset_comes_from_another_host() -> None:
    for path in [*OWN, *STATIC.joinpath("vendor").rglob("*.css")]:
        text = path.read_text("utf-8")
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", text), path
        assert not re.search(r"from\s+\"(https?:)?//|import\(\"(https?:)?//", text), path


def test_module_imports_resolve() -> None:
    for path in STATIC.joinpath("js").rglob("*.js"):
        text = path.read_text("utf-8")
        for target in re.findall(r"(?:from\s+|import\()\"(\.{1,2}/[^\"]+)\"", text):
            assert (path.parent / target).resolve().is_file(), f"{path.name}: {target}"


def test_vendored_chart_library_matches_the_lock_file() -> None:
    root = STATIC.parents[2]
    pinned = json.loads((root / "package.json").read_text())["dependencies"]["uplot"]
    locked = json.loads((root / "package-lock.json").read_text())["packages"]["node_modules/uplot"]
    assert locked["version"] == pinned and locked["license"] == "MIT"
    vendor = STATIC / "vendor" / "uplot"
    assert "MIT" in (vendor / "LICENSE").read_text()
    assert (vendor / "uPlot.iife.min.js").stat().st_size > 30_000


pytestmark = pytest.mark.anyio


async def test_the_dashboard_and_all_its_assets_are_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/", follow_redirects=True)
    assert r.status_code == 200 and 'id="login"' in r.text
    refs = re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", r.text)
    assert len(refs) >= 4
    for ref in refs:
        got = await client.get(ref)
        assert got.status_code == 200, ref
    for path in STATIC.rglob("*"):
        if path.is_file():
            rel = path.relative_to(STATIC).as_posix()
            assert (await client.get(f"/static/{rel}")).status_code == 200, rel
    for code in ("en", "ur"):
        r = await client.get(f"/static/i18n/{code}.json")
        assert r.json()["nav.overview"]
