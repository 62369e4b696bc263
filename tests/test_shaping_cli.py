"""`ferrymail shaping explain` and `check`, and `--shaping` on send and run, as a user runs
them: `python -m ferrymail …` in a subprocess, MX hosts from a real DNS server (knot)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from dns_peer import DnsServer

SHAPING = textwrap.dedent("""\
    [default]
    connection_limit = 10

    [provider.bigmail]
    mx_suffix = [".in.bigmail.test"]
    connection_limit = 4
    max_message_rate = "50/s"

    [[provider.bigmail.automation]]
    name = "bigmail-throttled"
    regex = '^421 4\\.7\\.0 '
    trigger = "3/h"
    set = { max_message_rate = "10/min" }
    duration = "1h"

    [domain."customer-shaping.test"]
    max_deliveries_per_connection = 7
    """)


def ferrymail(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrymail", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def zones(dns_server: DnsServer) -> None:
    """A provider's MX hosts in its own zone, and a customer domain whose MX is there: a
    name that says nothing of the provider."""
    dns_server.add_zone("bigmail.test", ["mx1.in A 127.0.0.2", "mx2.in A 127.0.0.3"])
    dns_server.add_zone(
        "customer-shaping.test", ["@ MX 10 mx1.in.bigmail.test.", "@ MX 20 mx2.in.bigmail.test."]
    )


def test_explain_finds_the_provider_through_real_mx_records(
    dns_server: DnsServer, tmp_path: Path
) -> None:
    zones(dns_server)
    (tmp_path / "shaping.toml").write_text(SHAPING)
    done = ferrymail(
        "shaping", "explain", "customer-shaping.test", "--shaping", "shaping.toml",
        "--dns-server", dns_server.address, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "mx       mx1.in.bigmail.test, mx2.in.bigmail.test" in out
    assert "site     mx1.in.bigmail.test,mx2.in.bigmail.test:25" in out
    assert (
        "entries  default, provider.bigmail (via MX mx1.in.bigmail.test), "
        'domain."customer-shaping.test"' in out
    )
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["connection_limit"] == ["4", "provider.bigmail"]
    assert rows["max_message_rate"] == ["50/s", "provider.bigmail"]
    assert rows["max_deliveries_per_connection"] == ["7", 'domain."customer-shaping.test"']
    assert rows["retry.max_age"] == ["5d", "builtin"]
    rule = next(line for line in out.splitlines() if line.startswith("bigmail-throttled"))
    assert rule.split()[-6:] == ["3/h", "max_message_rate", "=", "10/min", "(site)", "1h"]


def test_explain_json_says_where_each_value_comes_from(
    dns_server: DnsServer, tmp_path: Path
) -> None:
    zones(dns_server)
    (tmp_path / "shaping.toml").write_text(SHAPING)
    done = ferrymail(
        "shaping", "explain", "customer-shaping.test", "--shaping", "shaping.toml",
        "--dns-server", dns_server.address, "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["provider"] == {"entry": "provider.bigmail", "mx": "mx1.in.bigmail.test"}
    assert report["values"]["connection_limit"] == {"value": 4, "from": "provider.bigmail"}
    assert report["values"]["max_message_rate"] == {"value": "50/s", "from": "provider.bigmail"}
    assert report["values"]["connection_limit"]["from"] == "provider.bigmail"
    assert [r["name"] for r in report["automation"]] == ["bigmail-throttled"]


def test_explain_with_the_default_file_and_mx_given(tmp_path: Path) -> None:
    done = ferrymail(
        "shaping", "explain", "ferry-outfitters.example", "--mx", "ASPMX.L.GOOGLE.COM",
        "--mx", "alt1.aspmx.l.google.com", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "entries  default, provider.google (via MX aspmx.l.google.com)" in done.stdout
    assert "site     alt1.aspmx.l.google.com,aspmx.l.google.com:25" in done.stdout
    assert "gmail-rate-limited-4.7.28" in done.stdout


def test_explain_without_a_provider(dns_server: DnsServer, tmp_path: Path) -> None:
    dns_server.add_zone("plain-shaping.test", ["@ MX 10 mx", "mx A 127.0.0.4"])
    done = ferrymail(
        "shaping", "explain", "plain-shaping.test", "--dns-server", dns_server.address,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "entries  default\n" in done.stdout
    assert "provider.google" not in done.stdout


def test_check_accepts_a_good_file_and_refuses_a_bad_one_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text(SHAPING)
    done = ferrymail("shaping", "check", "good.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("good.toml: ok: 3 entries, 1 automation rules")
    (tmp_path / "bad.toml").write_text(SHAPING.replace('"50/s"', '"50 per second"'))
    done = ferrymail("shaping", "check", "bad.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "ferrymail shaping: bad.toml:7: provider.bigmail.max_message_rate:"
    )
    assert len(done.stderr.splitlines()) == 1
    (tmp_path / "broken.toml").write_text("[default]\nconnection_limit = = 3\n")
    done = ferrymail("shaping", "check", "broken.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("ferrymail shaping: broken.toml:2: not valid TOML")


def test_the_default_file_checks(tmp_path: Path) -> None:
    from ferrymail.shaping import default_path

    done = ferrymail("shaping", "check", default_path(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_send_refuses_a_bad_shaping_file_before_anything_is_sent(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[default]\n\n[pool.default]\nsources = { ip9 = 1 }\n")
    (tmp_path / "c.toml").write_text(
        'id = "c"\nsender = "b@example.com"\nfrom = "a@example.com"\nsubject = "s"\n'
        'text = "hello.txt"\n'
    )
    (tmp_path / "hello.txt").write_text("hello\n")
    (tmp_path / "r.csv").write_text("email\nann@a.test\n")
    done = ferrymail(
        "send", "c.toml", "r.csv", "--spool", "s.db", "--smarthost", "127.0.0.1:9",
        "--shaping", "bad.toml", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "bad.toml:4: pool.default.sources: no source 'ip9'" in done.stderr
    assert not (tmp_path / "s.db").exists()


def test_run_checks_the_shaping_file(tmp_path: Path) -> None:
    from ferrymail.spool import SqliteSpool

    with SqliteSpool(tmp_path / "s.db"):
        pass
    (tmp_path / "bad.toml").write_text("[default]\nconection_limit = 3\n")
    done = ferrymail(
        "run", "--spool", "s.db", "--drain", "--smarthost", "127.0.0.1:9",
        "--shaping", "bad.toml", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "bad.toml:2: default.conection_limit: unknown key" in done.stderr


def test_explain_takes_an_international_domain_as_its_a_label(tmp_path: Path) -> None:
    (tmp_path / "shaping.toml").write_text('[domain."bücher.example"]\nconnection_limit = 2\n')
    done = ferrymail(
        "shaping", "explain", "Bücher.example", "--shaping", "shaping.toml", "--mx", "mx.b.test",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "domain   xn--bcher-kva.example" in done.stdout
    assert 'entries  default, domain."xn--bcher-kva.example"' in done.stdout
