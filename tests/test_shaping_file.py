"""The shaping file (ferrymail.shaping): precedence field by field, providers by MX suffix,
and errors that name the file, the line and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from ferrymail import Config, ConfigError
from ferrymail.shaping import Rate, ShapingError, load, loads, parse_duration, parse_rate

GMAIL_MX = ["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"]
FILE = """\
[default]
connection_limit = 10
max_message_rate = "100/s"
idle_timeout = "30s"
tls = "opportunistic"

[provider.google]
mx_suffix = [".google.com", ".googlemail.com"]
connection_limit = 20
max_deliveries_per_connection = 50
[provider.google.retry]
first_retry = "10m"

[domain."gmail.com"]
max_message_rate = "2000/h"

[domain."example.com"]
connection_limit = 3

[site."mx.example.com"]
connection_limit = 1
tls = "required"
"""


def shaping_text(text: str) -> str:
    return textwrap.dedent(text)


def test_precedence_is_field_by_field() -> None:
    shaping = loads(FILE, name="shaping.toml")
    resolved = shaping.resolve("gmail.com", "gmail:25", GMAIL_MX)
    limits = resolved.limits
    assert resolved.entries == ("default", "provider.google", 'domain."gmail.com"')
    # The domain sets only the rate; the provider its connections and retry; the
    # default the idle timeout; ferrymail's own defaults the rest.
    assert limits.max_message_rate == Rate(2000, 3600)
    assert resolved.origin["max_message_rate"] == 'domain."gmail.com"'
    assert limits.connection_limit == 20
    assert resolved.origin["connection_limit"] == "provider.google"
    assert limits.max_deliveries_per_connection == 50
    assert limits.retry.first_retry == 600.0
    assert resolved.origin["retry.first_retry"] == "provider.google"
    assert limits.retry.max_age == 5 * 86400.0
    assert resolved.origin["retry.max_age"] == "builtin"
    assert limits.idle_timeout == 30.0
    assert resolved.origin["idle_timeout"] == "default"
    assert limits.data_timeout == 120.0
    assert resolved.origin["data_timeout"] == "builtin"


def test_a_provider_is_matched_by_mx_suffix_whatever_the_domain_is_called() -> None:
    shaping = loads(FILE, name="shaping.toml")
    resolved = shaping.resolve("ferry-outfitters.example", "aspmx:25", ["ASPMX.L.GOOGLE.COM."])
    assert resolved.provider == "provider.google"
    assert resolved.provider_mx == "aspmx.l.google.com"
    assert resolved.limits.connection_limit == 20
    assert resolved.limits.max_message_rate == Rate(100, 1)  # the default's: no domain entry
    # A suffix matches at a label boundary only.
    other = shaping.resolve("x.example", "x:25", ["mx.notgoogle.com"])
    assert other.provider is None
    assert other.limits.connection_limit == 10


def test_a_site_entry_beats_the_domain_and_matches_by_any_mx_host_name() -> None:
    shaping = loads(FILE, name="shaping.toml")
    resolved = shaping.resolve(
        "example.com", "mx.example.com,mx2.example.com:25", ["mx2.example.com", "mx.example.com"]
    )
    assert resolved.entries == ("default", 'domain."example.com"', 'site."mx.example.com"')
    assert resolved.limits.connection_limit == 1
    assert resolved.origin["connection_limit"] == 'site."mx.example.com"'
    assert resolved.limits.tls == "required"
    # And by the site key itself.
    keyed = loads('[site."a.test,b.test:25"]\nconnection_limit = 4\n').resolve(
        "c.test", "a.test,b.test:25", ["a.test", "b.test"]
    )
    assert keyed.limits.connection_limit == 4


def test_unlimited_lifts_a_less_specific_rate() -> None:
    shaping = loads(FILE + '\n[domain."free.example"]\nmax_message_rate = "unlimited"\n')
    resolved = shaping.resolve("free.example", "free:25", [])
    assert resolved.limits.max_message_rate is None
    assert resolved.origin["max_message_rate"] == 'domain."free.example"'


def test_bounce_and_automation_rules_gather_most_specific_first() -> None:
    shaping = loads(
        shaping_text("""\
        [[default.bounce_rules]]
        category = "policy-related"
        code = 421
        [[default.automation]]
        regex = "^421 "
        duration = "5m"
        suspend = true
        [provider.p]
        mx_suffix = ".p.test"
        [[provider.p.bounce_rules]]
        category = "spam-related"
        text = "blocked"
        [[provider.p.automation]]
        name = "p-blocked"
        regex = "blocked"
        duration = "1h"
        bounce = true
        """)
    )
    limits = shaping.resolve("d.test", "s", ["mx.p.test"]).limits
    assert [r.category for r in limits.bounce_rules] == ["spam-related", "policy-related"]
    assert [r.name for r in limits.automation] == ["p-blocked", "default.automation[0]"]


def test_rates_and_durations_parse() -> None:
    assert parse_rate("100/s") == Rate(100, 1)
    assert parse_rate("2000/h") == Rate(2000, 3600)
    assert parse_rate("10/min") == Rate(10, 60)
    assert parse_rate("5/10m").per_second == 5 / 600
    assert str(parse_rate("2000/h")) == "2000/h"
    assert parse_duration("5m") == 300
    assert parse_duration("4h") == 4 * 3600
    assert parse_duration("5d") == 5 * 86400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("5 days") == 5 * 86400
    for bad in ("100", "100/fortnight", "0/s", 100):
        with pytest.raises(ValueError):
            parse_rate(bad)
    for bad in ("5 parsecs", "m5", "0s", "", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


# --- errors: file, line, key --------------------------------------------------------------


def error_of(text: str) -> ShapingError:
    with pytest.raises(ConfigError) as caught:
        loads(textwrap.dedent(text), name="shaping.toml")
    assert isinstance(caught.value, ShapingError)
    return caught.value


def test_an_unknown_key_is_an_error_with_its_line() -> None:
    e = error_of("""\
        [default]
        connection_limit = 10

        [provider.google]
        mx_suffix = [".google.com"]
        max_mesage_rate = "10/s"
        """)
    assert (e.file, e.line, e.key) == ("shaping.toml", 6, "provider.google.max_mesage_rate")
    assert str(e).startswith("shaping.toml:6: provider.google.max_mesage_rate: unknown key")
    assert "max_message_rate" in str(e)  # what it may have meant is listed


def test_an_unknown_section_is_an_error() -> None:
    e = error_of('[defaults]\nconnection_limit = 1\n["gmail.com"]\n')
    assert (e.line, e.key) == (1, "defaults")


def test_a_bad_rate_names_its_line() -> None:
    e = error_of("""\
        [default]
        connection_limit = 10
        [domain."gmail.com"]
        # a comment
        max_message_rate = "100 per second"
        """)
    assert (e.line, e.key) == (5, 'domain."gmail.com".max_message_rate')
    assert "is not a rate" in str(e)


def test_a_bad_regex_names_its_rule() -> None:
    e = error_of("""\
        [provider.yahoo]
        mx_suffix = ".yahoodns.net"

        [[provider.yahoo.automation]]
        regex = "^421 "
        duration = "4h"
        suspend = true

        [[provider.yahoo.automation]]
        regex = '^421 4\\.7\\.0 [TS0'
        duration = "4h"
        suspend = true
        """)
    assert (e.line, e.key) == (10, "provider.yahoo.automation[1].regex")
    assert "bad regular expression" in str(e)


def test_a_bad_address_names_its_line() -> None:
    e = error_of("""\
        [source.ip1]
        address = "192.0.2.10"
        [source.ip2]
        ehlo = "mta2.example.com"
        address = "192.0.2.300"
        """)
    assert (e.line, e.key) == (5, "source.ip2.address")
    assert "not an IPv4 or IPv6 address" in str(e)


def test_a_bad_duration_names_its_line() -> None:
    e = error_of("""\
        [default]
        [default.retry]
        first_retry = "5m"
        max_age = "5 weeks"
        """)
    assert (e.line, e.key) == (4, "default.retry.max_age")
    assert "unknown unit 'weeks'" in str(e)


def test_a_bad_key_in_an_inline_table_is_on_its_line() -> None:
    e = error_of("""\
        [source.ip1]
        address = "2001:db8::1"
        warmup = { start = 2026-12-01, per_day = [50, 0] }
        """)
    assert (e.line, e.key) == (3, "source.ip1.warmup.per_day")


def test_retry_values_that_do_not_fit_together_are_refused() -> None:
    e = error_of("""\
        [provider.p]
        mx_suffix = ".p.test"
        [provider.p.retry]
        first_retry = "2h"
        """)  # above the default max_interval of 1 hour
    assert e.key == "provider.p.retry"
    assert e.line == 3
    assert "max_interval" in str(e)


def test_an_automation_rule_without_an_action_is_refused() -> None:
    e = error_of("""\
        [[default.automation]]
        regex = "^421"
        duration = "1h"
        """)
    assert (e.line, e.key) == (1, "default.automation[0]")
    assert "needs an action" in str(e)


def test_a_toml_syntax_error_names_file_and_line() -> None:
    e = error_of("""\
        [default]
        connection_limit = 10
        max_message_rate = 100/s
        """)
    assert e.line == 3
    assert str(e).startswith("shaping.toml:3: not valid TOML")


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "shaping.toml"
    path.write_text('[default]\ntls = "sometimes"\n')
    with pytest.raises(ConfigError, match=rf"^{path}:2: default.tls: 'sometimes' is not one of"):
        load(path)
    with pytest.raises(ConfigError, match="cannot read the shaping file"):
        load(tmp_path / "missing.toml")


def test_config_loads_and_checks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "shaping.toml"
    path.write_text(FILE)
    config = Config(helo_name="mta.example.com", shaping=str(path))
    assert config.shaping is not None and not isinstance(config.shaping, str)
    assert config.shaping.resolve("gmail.com", "g", GMAIL_MX).limits.connection_limit == 20
    path.write_text("[default]\nconnection_limit = 0\n")
    with pytest.raises(ConfigError, match=r"shaping.toml:2: default.connection_limit"):
        Config(helo_name="mta.example.com", shaping=str(path))
    assert Config(helo_name="mta.example.com").shaping is None


def test_resolutions_are_memoized_and_the_compiled_file_is_shared() -> None:
    shaping = loads(FILE)
    first = shaping.resolve("gmail.com", "g", GMAIL_MX)
    assert shaping.resolve("gmail.com", "g", GMAIL_MX) is first
    assert first.limits.automation == ()


def test_per_source_limits_merge_like_the_rest() -> None:
    shaping = loads(
        textwrap.dedent("""\
        [default.per_source]
        max_message_rate = "20/s"
        connection_limit = 2
        [provider.p]
        mx_suffix = ".p.test"
        [provider.p.per_source]
        max_message_rate = "5/s"
        """)
    )
    resolved = shaping.resolve("d.test", "s", ["mx.p.test"])
    per_source = resolved.limits.per_source
    assert (per_source.max_message_rate, per_source.connection_limit) == (Rate(5, 1), 2)
    assert resolved.origin["per_source.max_message_rate"] == "provider.p"
    assert resolved.origin["per_source.connection_limit"] == "default"
    assert resolved.limits.max_message_rate is None  # the site's own: unlimited


def test_the_compiled_file_cannot_be_changed_in_place() -> None:
    shaping = loads(FILE)
    with pytest.raises(TypeError):
        shaping.domains["new.example"] = shaping.default  # type: ignore[index]


# --- where keys are: the line finder -------------------------------------------------------


def test_lines_are_found_through_arrays_of_tables_quotes_and_dotted_keys() -> None:
    from ferrymail.shaping.locate import KeyLines

    lines = KeyLines(
        textwrap.dedent("""\
        # a comment = with an equals sign
        [default]
        retry.first_retry = "5m"            # a dotted key
        [[provider.p.automation]]
        regex = "a"
        [[provider.p.automation]]
        regex = '''
        max_age = "not a key, inside a string"
        '''
        set = { max_message_rate = "1/s" }
        [domain."b.example"]
        tls = [
          "[not.a.header]",
        ]
        "max_message_rate" = "1/s"
        [provider . p]
        connection_limit = 1
        """)
    )
    assert lines.line(("default", "retry", "first_retry")) == 3
    assert lines.line(("provider", "p", "automation", 0, "regex")) == 5
    assert lines.line(("provider", "p", "automation", 1, "regex")) == 7
    assert lines.line(("provider", "p", "automation", 1, "set", "max_message_rate")) == 10
    assert lines.line(("domain", "b.example", "max_message_rate")) == 15
    assert lines.line(("default", "retry", "max_age")) == 3  # not set: its parent's line
    assert lines.line(("provider", "p", "connection_limit")) == 17
    assert lines.line(("provider",)) == 4  # an implicit table: its first descendant
    assert lines.line(("nothing",)) is None


def test_an_unknown_source_in_a_pool_names_the_pool() -> None:
    e = error_of("""\
        [source.ip1]
        address = "192.0.2.1"
        [pool.bulk]
        sources = { ip1 = 1, ip2 = 1 }
        """)
    assert (e.line, e.key) == (4, "pool.bulk.sources")
    assert "no source 'ip2'" in str(e)


def test_a_provider_needs_mx_suffix() -> None:
    e = error_of("[provider.google]\nconnection_limit = 5\n")
    assert (e.line, e.key) == (1, "provider.google.mx_suffix")


def test_retry_values_of_different_entries_that_do_not_fit_together_are_refused() -> None:
    # Each fits with the default's values; a gmail.com recipient would get both.
    e = error_of("""\
        [provider.google]
        mx_suffix = ".google.com"
        retry = { first_retry = "45m" }
        [domain."gmail.com"]
        retry = { max_interval = "30m" }
        """)
    assert (e.line, e.key) == (5, 'domain."gmail.com".retry')
    assert "merged with provider.google, default" in str(e)


def test_an_empty_shaping_is_ferrymails_defaults() -> None:
    from ferrymail.config import SiteLimits
    from ferrymail.shaping import empty

    resolved = empty().resolve("example.com", "mx:25", ["mx.example.com"])
    assert resolved.entries == ("default",)
    assert resolved.limits.connection_limit == SiteLimits().connections
    assert set(resolved.origin.values()) == {"builtin"}
