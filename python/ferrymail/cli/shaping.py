"""`ferrymail shaping explain DOMAIN` and `ferrymail shaping check FILE`: read a shaping file."""

from __future__ import annotations

import argparse
import asyncio
import sys

import idna
import msgspec

from ..dns import MxResolver
from ..shaping import Resolved, Shaping, default_path, load
from ..shaping.model import AutomationRule
from ..shaping.units import Rate, format_duration
from .common import CliError, check_dns_server, table, warn

EXAMPLE = """examples:
  ferrymail shaping explain gmail.com                      # the shipped default file
  ferrymail shaping explain example.com --shaping shaping.toml --mx mx1.example.net
  ferrymail shaping check shaping.toml                     # exit 0, or 2 with file:line"""
#: How long the MX look-up may take (Config.dns_timeout's default).
DNS_TIMEOUT = 5.0
#: Seconds-valued fields shown as durations ("5m") rather than numbers.
_DURATIONS = ("timeout", "retry.first_retry", "retry.max_interval", "retry.max_age")


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "shaping",
        help="explain or check a traffic shaping file",
        description="Show which shaping entries apply to a domain, or check a shaping file. "
        "The engine does not apply shaping files yet.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="shaping_command", required=True, metavar="SUBCOMMAND")
    explain = sub.add_parser(
        "explain",
        help="which entries apply to a domain, and the values that result",
        description="Print the entries that apply to DOMAIN (default, the provider matched "
        "by an MX host, the domain, the site) and every resulting value with the entry it "
        "comes from. MX hosts are looked up unless --mx gives them.",
    )
    explain.add_argument("domain", metavar="DOMAIN")
    explain.add_argument(
        "--shaping", metavar="FILE", help="default: the file shipped with ferrymail"
    )
    explain.add_argument(
        "--mx", action="append", default=[], metavar="HOST", help="an MX host (repeatable)"
    )
    explain.add_argument("--dns-server", metavar="HOST:PORT", help="default: the system resolver")
    explain.add_argument("--port", type=int, default=25, help="the MX port (the site key's)")
    explain.add_argument("--json", action="store_true", help="print JSON")
    explain.set_defaults(func=main_explain)
    check = sub.add_parser(
        "check",
        help="validate a shaping file (exit 0, or 2 naming file, line and key)",
        description="Compile a shaping file; a bad one is reported as FILE:LINE: KEY: why.",
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=main_check)


def main_check(args: argparse.Namespace) -> int:
    shaping = load(args.file)
    rules = sum(len(e.automation) for e in shaping.entries)
    print(
        f"{args.file}: ok: {len(shaping.entries)} entries, {rules} automation rules, "
        f"{len(shaping.sources)} sources, {len(shaping.pools)} pools"
    )
    return 0


def main_explain(args: argparse.Namespace) -> int:
    shaping = load(args.shaping or default_path())
    domain = args.domain.strip().rstrip(".").lower()
    if not domain.isascii():  # as the engine and the file's entries name it: A-labels
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as e:
            raise CliError(f"{args.domain!r} is not a domain name: {e}") from None
    mx_hosts: list[str] = [h.strip().rstrip(".").lower() for h in args.mx]
    if mx_hosts:
        site_names = sorted(set(mx_hosts))
    else:
        if args.dns_server:
            check_dns_server(args.dns_server)
        mx_hosts, site_names = asyncio.run(_lookup(domain, args.dns_server))
    site = f"{','.join(site_names)}:{args.port}" if site_names else f"domain:{domain}"
    resolved = shaping.resolve(domain, site, mx_hosts)
    if args.json:
        report = _as_json(domain, mx_hosts, site, resolved, shaping)
        sys.stdout.buffer.write(msgspec.json.encode(report) + b"\n")
        return 0
    _print(domain, mx_hosts, site, resolved, shaping)
    return 0


async def _lookup(domain: str, dns_server: str | None) -> tuple[list[str], list[str]]:
    """The domain's MX hosts in preference order and its site's names, as routing sees them."""
    resolver = MxResolver([dns_server] if dns_server else None, timeout=DNS_TIMEOUT)
    resolution = await resolver.resolve(domain)
    if resolution.status != "ok":
        warn("shaping", f"{resolution.text}: no provider can match without MX hosts")
        return [], []
    hosts = [h.name for h in resolution.hosts]
    return hosts, list(resolution.site) or hosts


def _print(domain: str, mx: list[str], site: str, resolved: Resolved, shaping: Shaping) -> None:
    print(f"shaping  {shaping.name}")
    print(f"domain   {domain}")
    print(f"mx       {', '.join(mx) or '-'}")
    print(f"site     {site}")
    applied = [
        f"{name} (via MX {resolved.provider_mx})" if name == resolved.provider else name
        for name in resolved.entries
    ]
    print(f"entries  {', '.join(applied)}")
    print()
    rows = [(f, _shown(f, value), resolved.origin[f]) for f, value in resolved.values.items()]
    print(table(["setting", "value", "from"], rows))
    limits = resolved.limits
    if limits.automation:
        print()
        print(
            table(
                ["automation rule", "reply matches", "trigger", "action", "for"],
                [_rule_row(rule) for rule in limits.automation],
            )
        )
    if limits.bounce_rules:
        print()
        print(
            table(
                ["bounce rule", "category"],
                [(_bounce_conditions(r), r.category) for r in limits.bounce_rules],
            )
        )


def _shown(field: str, value: object) -> str:
    if value is None:
        return "unlimited" if field.endswith("rate") else "-"
    if isinstance(value, float) and field.endswith(_DURATIONS):
        return format_duration(value)
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def _trigger(rule: AutomationRule) -> str:
    return "immediate" if rule.immediate else str(Rate(rule.threshold, rule.window))


def _action(rule: AutomationRule) -> str:
    parts = []
    if rule.suspend:
        parts.append("suspend")
    if rule.bounce:
        parts.append("bounce")
    parts.extend(f"{k} = {v}" for k, v in rule.set.items())
    return f"{', '.join(parts)} ({rule.scope})"


def _rule_row(rule: AutomationRule) -> tuple[str, str, str, str, str]:
    return (rule.name, rule.regex, _trigger(rule), _action(rule), format_duration(rule.duration))


def _bounce_conditions(rule: object) -> str:
    fields = msgspec.structs.asdict(rule)  # type: ignore[arg-type]
    return ", ".join(f"{k} {v}" for k, v in fields.items() if k != "category" and v is not None)


def _as_json(
    domain: str, mx: list[str], site: str, resolved: Resolved, shaping: Shaping
) -> dict[str, object]:
    def plain(value: object) -> object:
        return str(value) if isinstance(value, Rate) else value

    return {
        "shaping": shaping.name,
        "domain": domain,
        "mx": mx,
        "site": site,
        "entries": list(resolved.entries),
        "provider": (
            {"entry": resolved.provider, "mx": resolved.provider_mx} if resolved.provider else None
        ),
        "values": {
            field: {"value": plain(value), "from": resolved.origin[field]}
            for field, value in resolved.values.items()
        },
        "automation": [
            {
                "name": r.name,
                "id": r.id,
                "regex": r.regex,
                "trigger": _trigger(r),
                "scope": r.scope,
                "suspend": r.suspend,
                "bounce": r.bounce,
                "set": {k: plain(v) for k, v in r.set.items()},
                "duration": r.duration,
                "restore": r.restore,
            }
            for r in resolved.limits.automation
        ],
        "bounce_rules": [msgspec.structs.asdict(r) for r in resolved.limits.bounce_rules],
    }
