"""Downtime reasons (a tree with English and Urdu labels), automatic outage labels, Pareto."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from karkhana.core.errors import NotFound
from karkhana.production.model import LossKind
from karkhana.production.spans import Span

POWER_OUTAGE = "power_outage"
"""The reason given automatically to a stop that begins during a grid outage (load-shedding)."""
UNASSIGNED = "unassigned"


@dataclass(frozen=True, slots=True)
class Label:
    en: str
    ur: str


UNASSIGNED_LABEL = Label("No reason given", "وجہ درج نہیں")


@dataclass(frozen=True, slots=True)
class Reason:
    """A node of the tree; ``id`` is the dotted path from the root (``mechanical.warp_break``)."""

    id: str
    label: Label
    loss: LossKind
    children: tuple[Reason, ...] = ()


class ReasonTree:
    def __init__(self, roots: Sequence[Reason]) -> None:
        self.roots = tuple(roots)
        self.by_id: dict[str, Reason] = {}
        stack = list(self.roots)
        while stack:
            node = stack.pop()
            self.by_id[node.id] = node
            stack.extend(node.children)

    def get(self, reason_id: str) -> Reason:
        try:
            return self.by_id[reason_id]
        except KeyError:
            raise NotFound(f"no downtime reason {reason_id!r}") from None

    def loss_of(self, reason_id: str | None) -> LossKind | None:
        node = self.by_id.get(reason_id) if reason_id else None
        return None if node is None else node.loss

    def label(self, reason_id: str | None) -> Label | None:
        node = self.by_id.get(reason_id) if reason_id else None
        return None if node is None else node.label


def starts_in_outage(start_ms: int, outages: Sequence[Span], grace_ms: int) -> bool:
    """Whether a stop beginning at ``start_ms`` was caused by an outage: it began during one, or
    at most ``grace_ms`` before one (the machine's and the panel's reports race)."""
    return any(s - grace_ms <= start_ms < e for s, e in outages)


@dataclass(frozen=True, slots=True)
class ParetoItem:
    key: str
    label: Label
    duration_ms: int
    count: int


def pareto(items: Iterable[tuple[str, int]], labels: Mapping[str, Label]) -> list[ParetoItem]:
    """Downtime ``(key, duration_ms)`` summed per key, longest first."""
    duration: dict[str, int] = {}
    count: dict[str, int] = {}
    for key, ms in items:
        if ms <= 0:
            continue
        duration[key] = duration.get(key, 0) + ms
        count[key] = count.get(key, 0) + 1
    return sorted(
        (ParetoItem(k, labels.get(k, Label(k, k)), duration[k], count[k]) for k in duration),
        key=lambda p: (-p.duration_ms, -p.count, p.key),
    )
