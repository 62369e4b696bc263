"""The SMTP peers of bench/soak.py: a small asyncio SMTP server on loopback that takes
everything (good) or misbehaves on a fixed schedule (hostile): 4xx and 5xx replies by
recipient, slow replies and connections dropped after the dot, by connection number.

Recipients are user{N}@domain; the hostile peer answers by N:
    N % 10 == 0   550 5.1.1 at RCPT (bounced)
    N % 10 == 1   451 4.7.1 at RCPT the first time it sees N, then 250 (deferred, then delivered)
    N % 10 == 2   451 4.2.2 at RCPT every time (deferred until the retry policy expires it)
and by connection number C (counted from 1) and message number M (counted from 1):
    C % 5 == 0    the greeting and the EHLO reply after 1.5 s (a greet pause, as Postfix's
                  postscreen and exim's connect ACL delays do)
    M % 5 == 0    the reply to the final dot after 1.5 s (a slow content scan)
    C % 7 == 0    the connection is closed at the final dot, without a reply

Slowness is per message, not every reply of a connection: the engine keeps connections
for up to 100 messages, so a peer slow at every reply of one connection in five ends
with all 8 of the site's connections slow (the fast ones are the ones that get replaced)
and takes 8 / 6 s = 1.3 messages a second, a tenth of what the soak offers it. That
measures the peer: the queue would grow for as long as the soak runs.
"""

from __future__ import annotations

import asyncio
import re

_ADDRESS = re.compile(rb"<user(\d+)@[^>]*>", re.I)
SLOW_REPLY = 1.5
EHLO = "250-soak.test\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 10000000"


class SmtpPeer:
    """One peer: `await start()`, then `port`; `delivered` counts accepted messages."""

    def __init__(self, hostile: bool, host: str = "127.0.0.1") -> None:
        self.hostile = hostile
        self.host = host
        self.port = 0
        self.connections = 0
        self.delivered = 0
        self.dropped = 0
        self.messages = 0
        self._greylisted: set[int] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        greet_pause = self.hostile and number % 5 == 0
        drop = self.hostile and number % 7 == 0

        async def reply(text: str, slow: bool = False) -> None:
            if slow:
                await asyncio.sleep(SLOW_REPLY)
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        try:
            await reply("220 soak.test ESMTP", greet_pause)
            accepted = 0
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    await reply(EHLO, greet_pause)
                elif verb == b"MAIL":
                    accepted = 0
                    await reply("250 2.1.0 Ok")
                elif verb == b"RCPT":
                    answer = self._rcpt(line)
                    accepted += answer.startswith("250")
                    await reply(answer)
                elif verb == b"DATA":
                    if not accepted:
                        await reply("554 5.5.1 no valid recipients")
                        continue
                    await reply("354 go ahead")
                    while await reader.readline() not in (b".\r\n", b""):
                        pass
                    if drop:
                        self.dropped += 1
                        return
                    self.messages += 1
                    slow_scan = self.hostile and self.messages % 5 == 0
                    await reply("250 2.0.0 Ok: queued", slow_scan)
                    self.delivered += 1
                elif verb == b"RSET":
                    accepted = 0
                    await reply("250 2.0.0 Ok")
                elif verb == b"NOOP":
                    await reply("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    await reply("221 2.0.0 Bye")
                    return
                else:
                    await reply("502 5.5.2 command not recognized")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _rcpt(self, line: bytes) -> str:
        found = _ADDRESS.search(line)
        if not self.hostile or found is None:
            return "250 2.1.5 Ok"
        n = int(found[1])
        if n % 10 == 0:
            return "550 5.1.1 no such user"
        if n % 10 == 1 and n not in self._greylisted:
            self._greylisted.add(n)
            return "451 4.7.1 greylisted, try again later"
        if n % 10 == 2:
            return "451 4.2.2 mailbox busy"
        return "250 2.1.5 Ok"
