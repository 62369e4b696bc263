"""Templates that cannot work for everyone are caught: an unknown filter or test when
the campaign is built; a template that does unbounded work, or makes a part too large,
for one recipient's values fails that recipient alone (naming the limit it hit) while
the rest of the batch, and the engine, go on."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import ferrymail
import pytest
from dns_peer import DnsServer
from engine_support import campaign, config, free_port_everywhere, on_uvloop, people
from ferrymail import Recipient, RenderedMessage, RenderError
from smtp_peers import ScriptedServer
from support import parse, tracking

#: Loops over a range the recipient's data sets: n = 100,000 is 10^10 iterations.
NESTED_LOOPS = "{% for i in range(n) %}{% for j in range(n) %}x{% endfor %}{% endfor %}\n"


#: Far above what the work limit allows a render (about 0.1 s here).
RENDER_DEADLINE = 60


def _campaign(**parts: object) -> ferrymail.Campaign:
    fields: dict[str, object] = {
        "id": "limits",
        "sender": "bounces@example.com",
        "from_": "news@example.com",
        "subject": "Hi {{ name }}",
        "text": "Hello {{ name }}\n",
    }
    fields.update(parts)
    return ferrymail.Campaign(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("part", "source", "line", "column", "what"),
    [
        ("subject", "Hi {{ name|nosuchfilter }}", 1, 12, "unknown filter `nosuchfilter`"),
        ("text", "Hello\n{% if name is nosuchtest %}x{% endif %}\n", 2, 15, "unknown test"),
        ("html", "<p>\n<b>{% filter shout %}x{% endfilter %}</b>", 2, 14, "unknown filter"),
        ("text", "{% macro m(v) %}{{ v|nope }}{% endmacro %}{{ m(name) }}", 1, 22, "`nope`"),
    ],
)
def test_an_unknown_filter_or_test_fails_the_build_with_part_line_and_column(
    part: str, source: str, line: int, column: int, what: str
) -> None:
    with pytest.raises(ferrymail.TemplateError) as raised:
        _campaign(**{part: source})
    e = raised.value
    assert (e.part, e.line, e.column) == (part, line, column), e
    assert what in str(e)


def test_filters_tests_and_filter_blocks_that_exist_still_work() -> None:
    c = _campaign(
        text="{% filter upper %}{{ name|default('x')|title }}{% endfilter %}"
        "{% if name is defined and name is string %}!{% endif %}\n",
        subject="{{ name|lower }}",
    )
    (result,) = ferrymail.render(c, [Recipient("a@example.net", {"name": "ann lee"})])
    assert isinstance(result, RenderedMessage), result
    assert parse(result).get_content().rstrip() == "ANN LEE!"


def _outcomes(c: ferrymail.Campaign, vars_: list[dict[str, object]]) -> list[object]:
    recipients = [Recipient(f"r{i}@example.net", v) for i, v in enumerate(vars_)]
    return list(ferrymail.render(c, recipients))


def test_unbounded_loops_fail_one_recipient_naming_the_work_limit() -> None:
    c = _campaign(text=NESTED_LOOPS)
    vars_: list[dict[str, object]] = [{"name": f"n{i}", "n": 3} for i in range(9)]
    vars_[4]["n"] = 100_000
    # In a daemon thread: without a work limit the render never returns, and this test
    # must fail rather than hang.
    done: list[list[object]] = []
    worker = threading.Thread(target=lambda: done.append(_outcomes(c, vars_)), daemon=True)
    worker.start()
    worker.join(RENDER_DEADLINE)
    assert done, f"the batch did not come back within {RENDER_DEADLINE} s"
    (results,) = done
    for i, result in enumerate(results):
        if i == 4:
            assert isinstance(result, RenderError), result
            assert "text" in result.reason and "work limit" in result.reason, result.reason
        else:
            assert isinstance(result, RenderedMessage), (i, result)
            assert parse(result).get_content().rstrip() == "x" * 9


@pytest.mark.parametrize(
    "parts",
    [
        # minijinja renders it (a loop).
        {"text": "{% for i in range(3) %}{{ big }}{% endfor %}\n"},
        # The splicing fast path (plain.rs): variables only.
        {"text": "{{ big }}{{ big }}\n"},
        # The link plans (link_plan.rs, text_plan.rs) splice with tracked links.
        {
            "html": '<p>{{ big }}{{ big }}<a href="https://shop.example.com/">x</a></p>',
            "text": "{{ big }}{{ big }} https://shop.example.com/\n",
            "tracking": tracking(),
        },
        # A header: the subject.
        {"subject": "{{ big }}{{ big }}"},
    ],
    ids=["loop", "plain", "link-plan", "subject"],
)
def test_an_oversized_part_fails_one_recipient_naming_the_output_limit(
    parts: dict[str, object],
) -> None:
    c = _campaign(**parts)
    big = "y" * (6 * 1024 * 1024)  # twice is over the 10 MiB of one part
    results = _outcomes(
        c, [{"name": "a", "big": "ok"}, {"name": "b", "big": big}, {"name": "c", "big": "ok"}]
    )
    assert isinstance(results[0], RenderedMessage) and isinstance(results[2], RenderedMessage)
    assert isinstance(results[1], RenderError), results[1]
    assert "output limit" in results[1].reason, results[1].reason


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere()


@on_uvloop
async def test_the_engine_fails_the_pathological_recipient_and_delivers_the_rest(
    dns_server: DnsServer,
    scripted_server: Callable[..., ScriptedServer],
    port: int,
    tmp_path: Path,
    spool_at: str,
) -> None:
    dns_server.add_zone("limits.test", ["@ MX 10 mx", "mx A 127.0.0.2"])
    server = scripted_server(host="127.0.0.2", port=port)
    recipients = people("limits.test", 30)
    for i, r in enumerate(recipients):
        recipients[i] = Recipient(r.address, {**r.vars, "n": 100_000 if i == 15 else 2}, id=r.id)
    async with ferrymail.Engine(spool_at, config(dns_server, port, tmp_path)) as e:
        await e.submit(campaign(text=NESTED_LOOPS), recipients)
        await e.drain()
        report = await e.report("c1")

    assert report.states["delivered"] == 29 and report.states["failed"] == 1, report
    delivered = sorted(m.rcpt_tos[0] for m in server.delivered)
    assert delivered == sorted(r.address for i, r in enumerate(recipients) if i != 15)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    (failed,) = [ev for ev in events if ev["type"] == "failed"]
    assert failed["address"] == recipients[15].address
    assert "work limit" in str(failed["text"]), failed
