"""`ferrymail inbound`: the bounce domain's SMTP listener (late bounces, complaints, mailto
unsubscribes) writing to the spool."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket

import msgspec
import uvloop

from ..errors import ConfigError
from ..events import EventBus
from ..inbound import InboundConfig, InboundServer, load
from ..webhooks.feedback import feedback_hook
from . import heap
from .common import CliError, add_spool, beside_spool, open_spool
from .serve import SECRET_ENV, UNSUBSCRIBE_SECRET_ENV, listening_socket
from .webhooks import add_service_config, service_webhooks

#: Without --config, the VERP secret comes from here (else the tracking secret's).
VERP_SECRET_ENV = "FERRYMAIL_VERP_SECRET"


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "inbound",
        help="receive late bounces, complaints and mailto unsubscribes (SMTP)",
        description="Receive mail for the bounce domain (the domain of the campaigns' "
        "envelope sender, where VERP addresses point, and of the mailto unsubscribe "
        "address) and feedback-loop reports, and record each late bounce, complaint, "
        "auto-reply and unsubscribe in the spool: hard bounces and complaints suppress "
        "the address. Mail for any other domain is refused. Without --config, the "
        f"secrets come from ${VERP_SECRET_ENV}, ${SECRET_ENV} and "
        f"${UNSUBSCRIBE_SECRET_ENV}.",
        epilog="example: ferrymail inbound --listen 0.0.0.0:25 --domain bounces.example.com "
        "--spool ferrymail.db --config inbound.toml",
    )
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="e.g. 0.0.0.0:25")
    p.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="a domain to receive mail for (repeat for several; added to the config's)",
    )
    add_spool(p)
    add_service_config(p, sends=False)
    p.add_argument("--config", metavar="FILE", help="a TOML file of InboundConfig settings")
    p.add_argument(
        "--event-log",
        metavar="FILE",
        help="JSON lines, one per late bounce, complaint, auto-reply and unsubscribe "
        "(default: inbound-events.jsonl next to the spool)",
    )
    p.add_argument("--hostname", help="the name in the greeting (default: this host's)")
    p.set_defaults(func=main)


def inbound_config(path: str | None, domains: list[str]) -> InboundConfig:
    try:
        if path is not None:
            config = load(path)
            if not domains:
                return config
            merged = list(dict.fromkeys([*config.domains, *domains]))
            return msgspec.structs.replace(config, domains=merged)
        if not domains:
            raise CliError("give --domain DOMAIN (or --config FILE with domains)")
        verp, tracking, unsubscribe = (
            os.environ.get(name) for name in (VERP_SECRET_ENV, SECRET_ENV, UNSUBSCRIBE_SECRET_ENV)
        )
        return InboundConfig(
            domains=domains,
            verp_secrets=[verp] if verp else [],
            tracking_secrets=[tracking] if tracking else [],
            unsubscribe_secrets=[unsubscribe] if unsubscribe else [],
        )
    except ConfigError as e:
        raise CliError(str(e)) from None


def main(args: argparse.Namespace) -> int:
    heap.configure()  # before the first thread: see heap.py
    config = inbound_config(args.config, args.domain)
    hooks = service_webhooks(args)
    sock = listening_socket(args.listen)
    log = args.event_log or beside_spool(args.spool, "inbound-events.jsonl")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's chatter
    with open_spool(args.spool) as spool:
        # With webhooks, the late bounces, complaints, auto-replies and delays they want
        # go to the outbox in the transactions that record them (`run` or `serve` send
        # them).
        spool.on_feedback = feedback_hook(hooks)
        events = EventBus(log)
        try:
            uvloop.run(_serve(InboundServer(spool, config, events, hostname=args.hostname), sock))
        finally:
            events.close()
            sock.close()
    return 0


async def _serve(server: InboundServer, sock: socket.socket) -> None:
    """Serves until SIGINT or SIGTERM; a message being received when it comes is
    finished (its sender is answered) before the spool closes."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    host, port = await server.start(sock=sock)
    trimming = asyncio.create_task(heap.trim_every())
    print(
        f"ferrymail inbound: listening on {host}:{port} for {', '.join(server.config.domains)}",
        flush=True,
    )
    await stopping.wait()
    trimming.cancel()
    await asyncio.gather(trimming, return_exceptions=True)
    await server.stop()
    received = ", ".join(f"{n} {kind}" for kind, n in sorted(server.received.items())) or "nothing"
    print(f"ferrymail inbound: stopped; received {received}", flush=True)
