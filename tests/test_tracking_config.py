"""Tracking and unsubscribe settings of the wrong type are refused where they are written:
in Python with a ConfigError naming the field and the type, and from a campaign file
as one line on stderr with exit status 2 (`secret = 20` in TOML used to become 20 zero
bytes, a key anyone can forge tokens with)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ferrymail import Campaign, ConfigError, Tracking, Unsubscribe

TRACK = "https://t.example.com/c/"
SECRET = "a-secret-of-16-bytes-or-more"

NOT_TEXT_OR_BYTES = [20, 99_999_999_999, 0, True, 1.5, None, [1, 2], {"k": "v"}, bytearray(20)]


@pytest.mark.parametrize("secret", NOT_TEXT_OR_BYTES, ids=repr)
def test_tracking_secret_must_be_text_or_bytes(secret: object) -> None:
    with pytest.raises(ConfigError) as info:
        Tracking(base_url=TRACK, secret=secret)  # type: ignore[arg-type]
    assert info.value.field == "tracking.secret"
    assert str(info.value) == (
        f"tracking.secret: a secret must be text or bytes, not {type(secret).__name__}"
    )


@pytest.mark.parametrize("secret", [s for s in NOT_TEXT_OR_BYTES if s is not None], ids=repr)
def test_unsubscribe_secret_must_be_text_or_bytes(secret: object) -> None:
    with pytest.raises(ConfigError) as info:
        Unsubscribe(url="https://t.example.com/u/", secret=secret)  # type: ignore[arg-type]
    assert info.value.field == "unsubscribe.secret"
    assert type(secret).__name__ in str(info.value)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Tracking(base_url=5, secret=SECRET), "tracking.base_url"),
        (lambda: Tracking(base_url=TRACK, secret=SECRET, opens="no"), "tracking.opens"),
        (lambda: Tracking(base_url=TRACK, secret=SECRET, clicks=1), "tracking.clicks"),
        (lambda: Unsubscribe(url=["https://t.example.com/u/"]), "unsubscribe.url"),
        (lambda: Unsubscribe(mailto=7), "unsubscribe.mailto"),
    ],
)
def test_other_settings_of_the_wrong_type_name_their_field(make: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()  # type: ignore[operator]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: must be ")


def test_text_and_bytes_secrets_still_work() -> None:
    for secret in (SECRET, SECRET.encode(), b"\x00" * 16):
        Campaign(
            id="c",
            sender="b@example.com",
            from_="n@example.com",
            subject="s",
            text="https://x.example/",
            tracking=Tracking(base_url=TRACK, secret=secret),
            unsubscribe=Unsubscribe(url="https://t.example.com/u/", secret=secret),
        )


CAMPAIGN = """\
id = "welcome"
sender = "bounces@news.example.com"
from = "Ferry Outfitters <news@example.com>"
subject = "Welcome aboard"
text = "welcome.txt"
[tracking]
base_url = "https://t.example.com/c/"
secret = {tracking}
[unsubscribe]
url = "https://t.example.com/u/"
secret = {unsubscribe}
"""


NOWHERE = ["--spool", "spool.db", "--smarthost", "127.0.0.1:9"]
UNSUBSCRIBE_SECRET = '"an-unsubscribe-secret-0123"'


@pytest.mark.parametrize(
    ("tracking", "unsubscribe", "field", "kind"),
    [
        ("20", UNSUBSCRIBE_SECRET, "tracking", "int"),
        ("99999999999", UNSUBSCRIBE_SECRET, "tracking", "int"),
        ("true", UNSUBSCRIBE_SECRET, "tracking", "bool"),
        ("[1, 2]", UNSUBSCRIBE_SECRET, "tracking", "list"),
        (f'"{SECRET}"', "20", "unsubscribe", "int"),
        (f'"{SECRET}"', "1.5", "unsubscribe", "float"),
    ],
)
def test_send_with_a_secret_that_is_not_text_is_one_line_exit_2(
    tmp_path: Path, tracking: str, unsubscribe: str, field: str, kind: str
) -> None:
    (tmp_path / "welcome.toml").write_text(
        CAMPAIGN.format(tracking=tracking, unsubscribe=unsubscribe)
    )
    (tmp_path / "welcome.txt").write_text("Hi, see https://shop.example.com/\n")
    (tmp_path / "people.csv").write_text("email\nann@example.net\n")
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", "send", "welcome.toml", "people.csv", *NOWHERE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    message = f"{field}.secret: a secret must be text or bytes, not {kind}"
    # One line, naming the command (and the file, as the CLI does), the field and the type.
    assert done.stderr.startswith("ferrymail send: ") and done.stderr.count("\n") == 1
    assert done.stderr.endswith(f"{message}\n"), done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "spool.db").exists()
