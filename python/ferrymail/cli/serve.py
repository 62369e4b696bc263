"""`ferrymail serve`: the tracking server (clicks, opens, one-click unsubscribe) and the /v1
service API under uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import threading

import msgspec

from ..engine.engine import Engine
from ..errors import ConfigError
from ..events import EventBus
from ..service import Api, Mounted
from ..service.dkim_keys import load as dkim_store
from ..spool import open_spool as open_any_spool
from ..spooler import Spooler
from ..web import WebConfig, app, load
from ..webhooks.feedback import feedback_hook
from . import heap
from .common import CliError, add_delivery, add_spool, beside_spool, engine_config, open_spool
from .serve_delivery import Delivery
from .service import Service, add_metrics_listen, count_events, metrics_socket
from .webhooks import add_service_config, sending, service_webhooks

#: Without --config, the secrets come from these environment variables (not from the
#: command line, where every user of the host can read them).
SECRET_ENV = "FERRYMAIL_TRACKING_SECRET"
UNSUBSCRIBE_SECRET_ENV = "FERRYMAIL_UNSUBSCRIBE_SECRET"


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "serve",
        help="the sending service: the /v1 API (injection, reports, cancel, "
        "suppressions), delivery, and click redirects, open pixels and one-click "
        "unsubscribes (HTTP)",
        description="Serve the /v1 service API (API keys: `ferrymail keys`) and deliver "
        "what it takes, as `ferrymail run` does (the same delivery options; "
        "--no-delivery for an API-only front whose spool `ferrymail run` nodes deliver); "
        "and serve the tracking links, open pixels and RFC 8058 one-click "
        "unsubscribe URLs of the campaigns in the spool, recording each click, open and "
        "unsubscribe there. Put it behind the TLS-terminating proxy of the campaigns' "
        "tracking host (unsubscribe URLs are https). Without --config, the secret comes "
        f"from ${SECRET_ENV} (and ${UNSUBSCRIBE_SECRET_ENV}). SIGTERM stops delivery "
        "(batches in flight finish or go back to the queue), then the server.",
        epilog="example: ferrymail serve --listen 127.0.0.1:8080 --spool ferrymail.db "
        "--config web.toml --helo mail.example.com",
    )
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="e.g. 127.0.0.1:8080")
    add_spool(p)
    p.add_argument("--config", metavar="FILE", help="a TOML file of WebConfig settings")
    p.add_argument(
        "--event-log",
        metavar="FILE",
        help="JSON lines, one per click, open and unsubscribe "
        "(default: web-events.jsonl next to the spool)",
    )
    p.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        metavar="IPS",
        help="proxies whose X-Forwarded-For is trusted for the client address (default: "
        "127.0.0.1; '*' for all)",
    )
    p.add_argument(
        "--recipients-limit",
        type=int,
        default=4 * 1024**3,
        metavar="BYTES",
        help="the largest body POST /v1/campaigns/ID/recipients takes (default 4 GiB; "
        "streamed, so this is not memory)",
    )
    p.add_argument(
        "--ssl-certfile",
        metavar="PEM",
        help="serve HTTPS with this certificate chain (uvicorn's TLS; or leave TLS to a "
        "reverse proxy in front)",
    )
    p.add_argument("--ssl-keyfile", metavar="PEM", help="the certificate's private key")
    p.add_argument(
        "--dkim-keys",
        metavar="FILE",
        help="the DKIM key store: a TOML table per key name (domain, selector, key = PEM "
        'file); API campaigns name their keys ("dkim": ["NAME"])',
    )
    p.add_argument(
        "--no-delivery",
        dest="delivery",
        action="store_false",
        help="take mail over the API but leave its delivery to `ferrymail run` processes "
        "on the same spool (the delivery options are then ignored)",
    )
    # Delivery events go to events.jsonl next to the spool: --event-log is the web's.
    add_delivery(p, event_log=False)
    add_service_config(p)
    add_metrics_listen(p)
    p.set_defaults(func=main)


def listen_address(text: str, flag: str = "--listen") -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) as (host, port); CliError naming it."""
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise CliError(f"{flag}: HOST:PORT such as 127.0.0.1:8080, not {text!r}")
    return host, int(port)


def listening_socket(listen: str, flag: str = "--listen") -> socket.socket:
    """A TCP socket bound to --listen HOST:PORT and listening; CliError naming it when
    the address cannot be had (in use, not this host's, a privileged port)."""
    host, port = listen_address(listen, flag)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise CliError(f"{flag} {listen}: {e.strerror or e}") from None
    sock.listen(2048)
    return sock


def web_config(path: str | None) -> WebConfig:
    if path is not None:
        return load(path)
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise CliError(f"give --config FILE, or the tracking secret in ${SECRET_ENV}")
    unsubscribe = os.environ.get(UNSUBSCRIBE_SECRET_ENV)
    return WebConfig(
        tracking_secrets=[secret], unsubscribe_secrets=[unsubscribe] if unsubscribe else []
    )


def main(args: argparse.Namespace) -> int:
    import uvicorn  # only this command needs it

    heap.configure()  # before the first thread: see heap.py
    try:
        config_web = web_config(args.config)
    except ConfigError as e:
        raise CliError(str(e)) from None
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise CliError("give both --ssl-certfile and --ssl-keyfile, or neither")
    try:
        dkim_keys = dkim_store(args.dkim_keys) if args.dkim_keys else {}
    except ConfigError as e:
        raise CliError(str(e)) from None
    hooks = service_webhooks(args)
    config = msgspec.structs.replace(engine_config(args, own_event_log=False), webhooks=hooks)
    sock = listening_socket(args.listen)
    metrics_sock = metrics_socket(args)
    log = args.event_log or beside_spool(args.spool, "web-events.jsonl")
    with open_spool(args.spool) as spool:
        # With webhooks, the clicks, opens and unsubscribes they want go to the outbox
        # in the transactions that record them; /metrics counts them.
        spool.on_feedback = feedback_hook(hooks)
        senders = sending(args, hooks)
        service = Service(args.spool, senders, metrics_sock) if senders or metrics_sock else None
        metrics = None if service is None else service.metrics
        events = EventBus(log, None if metrics is None else metrics.observe)
        tracking = app(spool=spool, config=config_web, events=events)
        # The /v1 API and delivery: one Engine on the spool submits, cancels, reports
        # and (unless --no-delivery) delivers, so a submit wakes its delivery at once;
        # the API has a spool of its own for keys and reads. The engine's events go to
        # the log `ferrymail send` and `run` write (events.jsonl next to the spool).
        engine = Engine(args.spool, config)
        if metrics is not None:
            metrics.watch_connections(engine.connections)
        api_spooler = Spooler(open_any_spool(args.spool, light=True))
        api = Api(engine, api_spooler, recipients_limit=args.recipients_limit, dkim_keys=dkim_keys)
        failures: list[BaseException] = []

        def failed(error: BaseException) -> None:
            failures.append(error)
            server.should_exit = True

        delivery = Delivery(engine, args.shaping, failed) if args.delivery else None
        background_tasks: list[asyncio.Task[None]] = []

        async def opened() -> None:
            await engine.open()
            background_tasks.append(asyncio.create_task(heap.trim_every()))
            if metrics is not None:  # submits, and deliveries when delivering
                background_tasks.append(asyncio.create_task(count_events(engine, metrics)))
            if delivery is not None:
                delivery.start()

        async def closing() -> None:
            # uvicorn has stopped taking requests and let those under way (a submit
            # streaming in) finish; then delivery stops, as `ferrymail run` stops.
            if delivery is not None:
                await delivery.stop()
            for task in background_tasks:
                task.cancel()
            await asyncio.gather(*background_tasks, return_exceptions=True)
            await engine.close()
            api_spooler.close()

        server = uvicorn.Server(
            uvicorn.Config(
                Mounted(tracking, api, opened, closing),
                loop="uvloop",
                http="httptools",
                lifespan="on",
                access_log=False,
                log_level="warning",
                proxy_headers=True,
                forwarded_allow_ips=args.forwarded_allow_ips,
                server_header=False,
                ssl_certfile=args.ssl_certfile,
                ssl_keyfile=args.ssl_keyfile,
            )
        )
        bound = sock.getsockname()
        print(f"ferrymail serve: listening on {bound[0]}:{bound[1]}", flush=True)
        # uvicorn stops gracefully on SIGTERM (the lifespan shutdown stops delivery and
        # commits the queued clicks and opens), then raises the signal again for the
        # handler it found: this one, so that the spool and the event log are closed and
        # the exit is 0, as for any server stopped the ordinary way (systemd, `kill`).
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
        background = _Background(service) if service is not None else None
        try:
            server.run(sockets=[sock])
        finally:
            if background is not None:
                background.stop()
            signal.signal(signal.SIGTERM, previous)
            events.close()
            sock.close()
    return 1 if failures else 0


class _Background:
    """The webhook sender and /metrics (the `service`) on a thread of their own (uvicorn
    owns the main thread's loop)."""

    def __init__(self, service: Service) -> None:
        import uvloop

        self._loop = uvloop.new_event_loop()
        self._service = service
        self._loop.call_soon_threadsafe(self._service.start)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ferrymail-service", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Returns once the POSTs under way ended; what was not sent stays in the outbox."""
        done = asyncio.run_coroutine_threadsafe(self._service.stop(), self._loop)
        done.result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
