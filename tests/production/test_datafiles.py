"""Production data files load, and mistakes name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from karkhana.core.errors import ConfigError
from karkhana.production.datafiles import (
    calendar_for,
    load_calendar,
    load_calendars,
    load_profiles,
    load_reasons,
)


def test_shipped_files_load() -> None:
    calendars = load_calendars()
    assert {"default", "continuous"} <= set(calendars)
    assert calendar_for(calendars, "demo-mill").id == "continuous"
    assert calendar_for(calendars, "some-site").id == "default"
    tree = load_reasons()
    assert tree.get("power_outage").loss == "breakdown"
    assert tree.get("planned_maintenance").loss == "planned"
    assert tree.roots[0].id == "power_outage"  # common reasons first
    for reason in tree.by_id.values():
        assert reason.label.en and reason.label.ur
        assert any("\u0600" <= ch <= "\u06ff" for ch in reason.label.ur), reason.id
    profiles = load_profiles()
    assert profiles.of("filling_machine").reject_key == "reject_count"
    assert profiles.of("unknown").speed_key is None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('id = "x"\nname = "X"\n', "shifts"),
        (
            'id = "x"\nname = "X"\n[[shifts]]\nid = "A"\nname = "A"\nstart = "25:00"\nend = "06:00"\n',
            "shifts[0].start",
        ),
        (
            'id = "x"\nname = "X"\ndays_off = ["funday"]\n[[shifts]]\nid = "A"\nname = "A"\n'
            'start = "06:00"\nend = "14:00"\n',
            "days_off",
        ),
        ('id = "x"\nname = "X"\nsurprise = 1\n', "surprise"),
        ('id = "y"\nname = "X"\n', "id"),
    ],
)
def test_calendar_mistakes_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_calendar(path)
    assert str(path) in err.value.message and field in err.value.message


def test_site_reasons_extend_the_tree(tmp_path: Path) -> None:
    (tmp_path / "mill.toml").write_text(
        'id = "mill"\n[[reasons]]\nid = "mechanical"\nen = "Mechanical"\nur = "میکانیکی خرابی"\n'
        'loss = "breakdown"\n[[reasons.children]]\nid = "temple"\nen = "Temple fault"\n'
        'ur = "ٹیمپل کی خرابی"\nloss = "breakdown"\n'
    )
    tree = load_reasons(tmp_path)
    assert tree.get("mechanical.temple").label.en == "Temple fault"
    assert tree.get("mechanical.warp_break")  # the shipped children stay


def test_a_bad_loss_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        'id = "bad"\n[[reasons]]\nid = "x"\nen = "X"\nur = "ایکس"\nloss = "sometimes"\n'
    )
    with pytest.raises(ConfigError, match=r"reasons\[0\]\.loss"):
        load_reasons(tmp_path)
