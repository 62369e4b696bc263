"""`ferrymail serve` as the sending service: a real serve process takes a campaign over the
/v1 API and delivers it (knot DNS, a loopback MX on --mx-port), its webhooks fire, and
SIGTERM stops delivery (batches in flight go back to the queue) and then the server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import CAMPAIGN, Served, jsonl, serve
from dns_peer import DnsServer
from engine_support import free_port_everywhere
from ferrymail.cli import main as cli
from ferrymail.spool import SqliteSpool
from smtp_peers import Fault, RawServer, ScriptedServer
from test_webhooks import SECRET_NEW, SECRET_OLD, verified
from webhook_receiver import Receiver

NO_SUCH_USER = "550 5.1.1 no such user"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere()


def delivering(dns_server: DnsServer, port: int, *more: str) -> tuple[str, ...]:
    return (
        "--dns-server", dns_server.address, "--mx-port", str(port), "--helo", "engine.test",
        *more,
    )  # fmt: skip


def until_report(served: Served, campaign: str, done: Callable[[dict[str, int]], bool]) -> Any:
    """The campaign's report (GET /v1/campaigns/ID) once `done(states)` holds."""
    deadline = time.monotonic() + 60
    while True:
        report = httpx.get(f"{served.url}/v1/campaigns/{campaign}", headers=served.auth()).json()
        if done(report["states"]):
            return report
        assert served.process.poll() is None, "ferrymail serve ended"
        assert time.monotonic() < deadline, report
        time.sleep(0.05)


def test_serve_delivers_what_its_api_takes_and_its_webhooks_fire(
    dns_server: DnsServer,
    scripted_server: Callable[..., ScriptedServer],
    port: int,
    tmp_path: Path,
) -> None:
    dns_server.add_zone("serving.test", ["@ MX 10 mx", "mx A 127.0.0.12"])
    mx = scripted_server(
        host="127.0.0.12", port=port, rcpt_replies={"user3@serving.test": NO_SUCH_USER}
    )
    receiver = Receiver(["fail"])  # the first POST fails: retried
    service = tmp_path / "service.toml"
    service.write_text(
        f'[[webhook]]\nurl = "{receiver.url}"\nevents = ["queued", "delivered", "bounced"]\n'
        f'secrets = ["{SECRET_OLD}", "{SECRET_NEW}"]\nbatch_wait = 20\n'
    )
    options = delivering(dns_server, port, "--service-config", str(service))
    with receiver, serve(tmp_path, *options, delivery=True) as served:
        api = httpx.Client(base_url=served.url, headers=served.auth(), timeout=30)
        assert api.put("/v1/campaigns/c1", json=CAMPAIGN).status_code == 200
        submitted = api.post("/v1/campaigns/c1/recipients", content=jsonl("serving.test", 6))
        assert submitted.json()["accepted"] == 6
        report = until_report(served, "c1", lambda s: s["delivered"] + s["bounced"] == 6)
        assert (report["states"]["delivered"], report["states"]["bounced"]) == (5, 1)
        deadline = time.monotonic() + 30
        while len(verified(receiver)) < 12:  # 6 queued, 5 delivered, 1 bounced
            assert time.monotonic() < deadline, receiver.posts
            time.sleep(0.05)
    assert served.process.returncode == 0

    assert sorted(m.rcpt_tos[0] for m in mx.delivered) == [
        f"user{i}@serving.test" for i in (0, 1, 2, 4, 5)
    ]
    events = verified(receiver)
    by_type = {t: sorted(e["recipient"] for e in events if e["type"] == t) for t in
               ("queued", "delivered", "bounced")}  # fmt: skip
    assert by_type["queued"] == [f"serving.test-{i}" for i in range(6)]
    assert by_type["delivered"] == [f"serving.test-{i}" for i in (0, 1, 2, 4, 5)]
    assert by_type["bounced"] == ["serving.test-3"]
    # Per recipient, queued comes before its final event.
    for key in by_type["queued"]:
        mine = [e["type"] for e in events if e["recipient"] == key]
        assert mine[0] == "queued" and len(mine) == 2
    assert receiver.posts[0][2] == "fail"


def test_sigterm_puts_the_batches_in_flight_back_and_a_run_delivers_them(
    dns_server: DnsServer, raw_server: Callable[..., RawServer], port: int, tmp_path: Path
) -> None:
    dns_server.add_zone("stalled.test", ["@ MX 10 mx", "mx A 127.0.0.13"])
    # The MX takes the recipients, then never answers DATA: the batch is in flight.
    stalled = raw_server(host="127.0.0.13", port=port, faults=[Fault("DATA", delay=60)])
    with serve(tmp_path, *delivering(dns_server, port), delivery=True) as served:
        api = httpx.Client(base_url=served.url, headers=served.auth(), timeout=30)
        assert api.put("/v1/campaigns/c1", json=CAMPAIGN).status_code == 200
        submitted = api.post("/v1/campaigns/c1/recipients", content=jsonl("stalled.test", 3))
        assert submitted.json()["accepted"] == 3
        deadline = time.monotonic() + 30
        while not stalled.stalls:
            assert time.monotonic() < deadline, "the MX was never reached"
            time.sleep(0.05)
    # end_process sent SIGTERM: serve cut the session and exited cleanly, in its time.
    assert served.process.returncode == 0
    with SqliteSpool(served.spool, read_only=True) as spool:
        states = spool.report("c1").states
    assert states["queued"] == 3  # back in the queue, no attempt counted, none leased

    # The next deliverer on the spool takes them (through a healthy relay).
    with ScriptedServer() as relay:
        assert cli(["run", "--drain", "--spool", str(served.spool), "--helo", "engine.test",
                    "--smarthost", f"{relay.host}:{relay.port}"]) == 0  # fmt: skip
    assert len(relay.delivered) == 3


def test_no_delivery_takes_mail_and_leaves_it_queued(
    dns_server: DnsServer,
    scripted_server: Callable[..., ScriptedServer],
    port: int,
    tmp_path: Path,
) -> None:
    dns_server.add_zone("front.test", ["@ MX 10 mx", "mx A 127.0.0.14"])
    mx = scripted_server(host="127.0.0.14", port=port)
    with serve(tmp_path, *delivering(dns_server, port), "--no-delivery") as served:
        api = httpx.Client(base_url=served.url, headers=served.auth(), timeout=30)
        assert api.put("/v1/campaigns/c1", json=CAMPAIGN).status_code == 200
        assert api.post("/v1/campaigns/c1/recipients", content=jsonl("front.test", 2)).is_success
        time.sleep(1)  # what a delivering serve would have sent by now, a front does not
        assert until_report(served, "c1", lambda s: s["queued"] == 2)
    assert served.process.returncode == 0
    assert mx.delivered == []
    # A `ferrymail run` node on the spool delivers them.
    assert cli(["run", "--drain", "--spool", str(served.spool),
                *delivering(dns_server, port)]) == 0  # fmt: skip
    assert len(mx.delivered) == 2


def test_a_bad_delivery_option_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "spool.db"
    SqliteSpool(spool).close()
    monkeypatch.setenv("FERRYMAIL_TRACKING_SECRET", "serve-test-tracking-secret-0123456789")
    args = ["serve", "--listen", "127.0.0.1:0", "--spool", str(spool), "--mx-port", "0"]
    assert cli(args) == 2
    assert capsys.readouterr().err == (
        "ferrymail serve: --mx-port 0: not a TCP port (1 to 65535)\n"
    )
