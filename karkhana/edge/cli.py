"""``karkhana edge [run] | status``: run the edge agent, or print a running agent's health."""

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
        choices=["run", "status"],
        default="run",
        help="run the agent (default) or print the health of the one running here",
    )
    config.add_arguments(parser)


def fetch_status(settings: EdgeSettings) -> dict[str, Any]:
    url = settings.local_url + "/health"
    try:
        r = httpx.get(url, timeout=5)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise KarkhanaError(
            f"no edge agent answers at {url} ({exc}); is `karkhana edge` running with this"
            " --http-port?",
            reason="edge_unreachable",
        ) from None
    return body


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
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from karkhana.edge.agent import EdgeAgent

    asyncio.run(EdgeAgent(settings).run())
    return 0
