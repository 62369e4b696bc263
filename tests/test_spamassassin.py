"""A real spam filter scores what ferrymail writes: Debian's SpamAssassin with local rules
only (`spamassassin -L -t`, no network) on the demo, sample, README tour and README
"Use it" campaigns. No rule may hit because of ferrymail's headers, MIME structure or
tracking; the open pixel's cost on short HTML is measured and documented (README,
"Open pixel").

Which rules are ferrymail's: every rule that hits, except the two lists below. Our
templates are plain, so everything else a rule could see is what ferrymail wrote:
header fields and their format (Date, Message-ID, List-*, MIME-Version), the MIME
structure and encodings, the tracked links and the open pixel. A rule about what the
user wrote (wording, colours, the choice to send HTML) goes in USER_CONTENT, with why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from ferrymail import Campaign, RenderedMessage, Tracking, Unsubscribe, render, sample
from ferrymail.cli.demo import dkim_key

# Informational (scored 0): the message was scored before any SMTP hop, so it has no
# Received field yet; a receiver always sees one.
SCORING_OUTSIDE_A_MAIL_PATH = {"NO_RECEIVED", "NO_RELAYS"}
# What the user chose to write: HTML_MESSAGE says the message has an HTML part (scored
# 0.001, informational).
USER_CONTENT = {"HTML_MESSAGE"}
# The open pixel is an <img>: on HTML with little text and no image of its own,
# SpamAssassin's HTML_IMAGE_ONLY_* rules read it as an image-only message. The README
# says so, with the points, and how to turn the pixel off.
PIXEL_ON_SHORT_HTML = {"HTML_IMAGE_ONLY_04": 1.7}

TOUR_TOML = """\
id = "welcome-2026"
sender = "bounces@news.example.com"
from = "Ferry Outfitters <news@example.com>"
subject = "Welcome aboard, {{ first_name }}"
text = "welcome.txt"
[tracking]
base_url = "https://t.example.com/c/"
secret = "a-secret-of-16-bytes-or-more"
[unsubscribe]
url = "https://t.example.com/u/"
"""
TOUR_TEXT = (
    "Hi {{ first_name }}, see https://shop.example.com/\nUnsubscribe: {{ unsubscribe_url }}\n"
)


def use_it(opens: bool = True) -> Campaign:
    """The README's "Use it" campaign: one line of HTML, tracking and unsubscribe."""
    return Campaign(
        id="welcome-2026",
        sender="bounces@news.example.com",
        from_="Ferry Outfitters <news@example.com>",
        subject="Welcome aboard, {{ first_name }}",
        html='<p>Hi {{ first_name }}, <a href="https://shop.example.com/">visit us</a>.</p>'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
        text="Hi {{ first_name }}, visit https://shop.example.com/\n"
        "Unsubscribe: {{ unsubscribe_url }}\n",
        headers={"Feedback-ID": "welcome:news:ferry"},
        tracking=Tracking(
            base_url="https://t.example.com/c/", secret="a-secret-of-16-bytes-or-more", opens=opens
        ),
        unsubscribe=Unsubscribe(url="https://t.example.com/u/", mailto="unsubscribe@example.com"),
    )


def rendered(campaign: Campaign) -> bytes:
    (message,) = render(campaign, [next(sample.recipients(1))], threads=1)
    assert isinstance(message, RenderedMessage), message
    return message.data


def tour(directory: Path) -> bytes:
    """The README tour's message, as `ferrymail render` prints it."""
    (directory / "welcome.toml").write_text(TOUR_TOML)
    (directory / "welcome.txt").write_text(TOUR_TEXT)
    (directory / "people.csv").write_text("email,first_name\nann@example.net,Ann\n")
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", "render", "welcome.toml", "people.csv"],
        capture_output=True,
        cwd=directory,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def score(message: bytes, home: Path) -> dict[str, float]:
    """The rules SpamAssassin's local tests hit, with their points."""
    spamassassin = shutil.which("spamassassin")
    assert spamassassin, "spamassassin is missing: scripts/setup installs it (Debian package)"
    done = subprocess.run(
        [spamassassin, "-L", "-t"],
        input=message.replace(b"\r\n", b"\n"),
        capture_output=True,
        # Its user state (auto-learning, preferences) goes to a scratch home.
        env={**os.environ, "HOME": str(home)},
        timeout=120,
        check=True,
    )
    report = message_from_bytes(done.stdout, policy=default)
    # The field is folded after commas: join its lines, then its list of tests.
    status = " ".join(str(report["X-Spam-Status"]).split()).replace(", ", ",")
    tests = status.split("tests=", 1)[1].split(" autolearn=")[0]
    details = done.stdout.decode("utf-8", "replace").split("Content analysis details:", 1)[1]
    points = {}
    for line in details.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] in tests.split(","):
            points[fields[1]] = float(fields[0])
    assert set(points) == {t for t in tests.split(",") if t and t != "none"}, status
    return points


def ferrymails(points: dict[str, float]) -> dict[str, float]:
    skip = SCORING_OUTSIDE_A_MAIL_PATH | USER_CONTENT
    return {rule: p for rule, p in points.items() if rule not in skip}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spamassassin-home")


@pytest.mark.parametrize(
    "name",
    ["demo", "sample", "tour", "use-it without the pixel"],
)
def test_no_rule_hits_because_of_what_ferrymail_writes(
    name: str, home: Path, tmp_path: Path
) -> None:
    message = {
        "demo": lambda: rendered(sample.campaign("demo-1", dkim=[dkim_key()])),
        "sample": lambda: rendered(sample.campaign()),
        "tour": lambda: tour(tmp_path),
        "use-it without the pixel": lambda: rendered(use_it(opens=False)),
    }[name]()
    assert ferrymails(score(message, home)) == {}


def test_the_pixel_on_short_html_costs_what_the_readme_says(home: Path) -> None:
    message = rendered(use_it())
    assert b"<img" in message  # the pixel, the only image
    assert ferrymails(score(message, home)) == PIXEL_ON_SHORT_HTML
