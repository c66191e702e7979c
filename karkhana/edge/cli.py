"""``karkhana edge [run] | status | quarantine | release``: run the edge agent, print a running
agent's health, list what it quarantined, or send quarantined samples again."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import httpx

from karkhana.core.errors import KarkhanaError
from karkhana.edge import config
from karkhana.edge.config import EdgeSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=["run", "status", "quarantine", "release"],
        default="run",
        help="run the agent (default), print the health of the one running here, list its"
        " quarantined samples, or release them to be sent again",
    )
    parser.add_argument(
        "--device", default=None, metavar="ID", help="release: only this device's samples"
    )
    parser.add_argument(
        "--reason-contains",
        default=None,
        metavar="TEXT",
        help="release: only samples whose quarantine reason contains TEXT",
    )
    config.add_arguments(parser)


def fetch_status(settings: EdgeSettings) -> dict[str, Any]:
    return _call(settings, "GET", "/health")


def _call(
    settings: EdgeSettings, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    url = settings.local_url + path
    try:
        r = httpx.request(method, url, json=body, timeout=30)
        if r.is_error:
            detail = r.json().get("detail") if "json" in r.headers.get("content-type", "") else ""
            raise KarkhanaError(f"{url}: {r.status_code} {detail or r.reason_phrase}")
        answer: dict[str, Any] = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise KarkhanaError(
            f"no edge agent answers at {url} ({exc}); is `karkhana edge` running with this"
            " --http-port?",
            reason="edge_unreachable",
        ) from None
    return answer


def format_quarantine(groups: list[dict[str, Any]]) -> str:
    if not groups:
        return "nothing is quarantined"
    lines = [f"{'samples':>9}  {'device':<20} reason"]
    lines += [f"{g['points']:>9}  {g['device_id']:<20} {g['reason']}" for g in groups]
    total = sum(int(g["points"]) for g in groups)
    lines.append(
        f"{total:>9}  in all; `karkhana edge release [--device ID] [--reason-contains TEXT]`"
        " sends them again once the cause is mended"
    )
    return "\n".join(lines)


def format_status(st: dict[str, Any]) -> str:
    def age(seconds: object) -> str:
        return "never" if seconds is None else f"{seconds} s ago"

    fwd = st.get("forwarder", {})
    clock = st.get("clock", {})
    lines = [
        f"gateway     {st.get('gateway_id')} -> {st.get('server')}",
        f"link        {st.get('link')}"
        + (f" ({st['last_error']})" if st.get("last_error") else ""),
        f"last sync   {age(st.get('last_sync_age_s'))}",
        f"backlog     {st.get('backlog_points')} samples, oldest "
        + ("-" if st.get("backlog_age_s") is None else f"{st['backlog_age_s']} s old")
        + f" (cap {st.get('buffer_cap_points')}, {st.get('when_full')}"
        + (", FULL" if st.get("buffer_full") else "")
        + ")",
        f"dropped     {st.get('dropped_points')}   rejected {st.get('rejected_points')}"
        f"   quarantined {st.get('quarantined_points')}",
        f"sent        {fwd.get('sent_points')} samples in {fwd.get('sent_batches')} batches,"
        f" {fwd.get('bytes_per_point')} B/sample",
        f"clock       {'checked' if clock.get('synced') else 'NOT checked'} against the server,"
        f" offset {clock.get('offset_ms')} ms, {clock.get('jumps')} jumps",
    ]
    for name, counters in sorted((st.get("inputs") or {}).items()):
        error = counters.get("last_error") or counters.get("last_reason")
        lines.append(
            f"input       {name}: {counters.get('points', 0)} samples,"
            f" {counters.get('errors', counters.get('refused', 0))} errors"
            + (f" (last: {error})" if error else "")
        )
    alarms = st.get("alarms")
    if alarms:
        lines.append(
            f"alarms      {alarms.get('rules')} rules, {alarms.get('open')} open,"
            f" {alarms.get('unsent')} not yet sent to the server"
        )
    if st.get("recoveries"):
        lines.append(
            f"recovered   {st['recoveries']} damaged buffer file(s),"
            f" {st.get('salvaged_points')} samples salvaged"
        )
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace) -> int:
    settings = config.from_args(args)
    if args.action == "status":
        print(format_status(fetch_status(settings)))
        return 0
    if args.action == "quarantine":
        print(format_quarantine(_call(settings, "GET", "/quarantine")["groups"]))
        return 0
    if args.action == "release":
        query = {"device_id": args.device, "reason_contains": args.reason_contains}
        released = _call(settings, "POST", "/quarantine/release", query)["released"]
        print(f"{released} samples released; they are sent behind the backlog")
        return 0
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "amqtt", "transitions", "pymodbus", "asyncua"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from karkhana.edge.agent import EdgeAgent

    asyncio.run(EdgeAgent(settings).run())
    return 0
