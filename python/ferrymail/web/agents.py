"""Which requests are machines, not people: link scanners, prefetchers and image proxies."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

#: Parts of the User-Agent (compared case-insensitively) of the link scanners and
#: prefetchers that follow tracked links before (or instead of) a person: their requests
#: are recorded as machine clicks, never counted as clicks. Mail-security gateways
#: (Microsoft Defender Safe Links and Bing's previewer, Proofpoint URL Defense,
#: Mimecast, Barracuda, Symantec/Broadcom, Trend Micro, Sophos, Cisco, Forcepoint,
#: FireEye/Trellix), Google's link and safety checkers, chat and social previewers that
#: fetch a link pasted into them, and HTTP libraries and command-line clients that no
#: person browses with. A gateway that sends a browser's User-Agent cannot be told by
#: it: HEAD requests (which browsers never make for a click) are flagged as well.
SCANNERS: tuple[str, ...] = (
    # Microsoft Defender for Office 365 (Safe Links) and Bing's link preview
    "safelinks",
    "bingpreview",
    "microsoft-atp",
    "msoffice-linkcheck",
    # Proofpoint URL Defense, Mimecast, Barracuda
    "proofpoint",
    "ppops",
    "mimecast",
    "barracuda",
    # other gateways and sandboxes
    "symantec",
    "broadcom",
    "trendmicro",
    "trend micro",
    "sophos",
    "cisco",
    "ironport",
    "forcepoint",
    "fireeye",
    "trellix",
    "zscaler",
    "checkpoint",
    "paloalto",
    "headlesschrome",
    "phantomjs",
    # Google's checkers
    "google-safety",
    "google-inspectiontool",
    "googlebot",
    "google-read-aloud",
    "googleother",
    # previewers of links pasted in chats and social sites
    "facebookexternalhit",
    "slackbot",
    "slack-imgproxy",
    "linkedinbot",
    "twitterbot",
    "whatsapp",
    "telegrambot",
    "discordbot",
    "skypeuripreview",
    # HTTP libraries and command-line clients
    "curl/",
    "wget/",
    "python-requests",
    "python-httpx",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "okhttp",
    "java/",
    "apache-httpclient",
    "libwww-perl",
    "httpie",
    # and whatever calls itself one
    "bot/",
    "spider",
    "crawler",
)

#: Parts of the User-Agent of the mail providers' image proxies: they fetch the open
#: pixel for the recipient (Gmail at once when the message is shown, Yahoo likewise),
#: so an open through them is flagged as a machine open, as ESPs report them.
IMAGE_PROXIES: tuple[str, ...] = ("googleimageproxy", "yahoomailproxy", "ggpht.com")

#: Apple Mail Privacy Protection fetches every remote image when a message arrives,
#: read or not, through Apple's proxies, with the bare User-Agent "Mozilla/5.0" and
#: from Apple's own network 17.0.0.0/8 (ARIN's registration of Apple; ESPs such as
#: SocketLabs document this combination). The client address is the one the ASGI server
#: gives: behind a reverse proxy, run uvicorn with --proxy-headers and
#: --forwarded-allow-ips so that it is the visitor's.
APPLE_NETWORKS: tuple[str, ...] = ("17.0.0.0/8",)
APPLE_PROXY_AGENT = "mozilla/5.0"
#: User-Agents whose verdict is remembered: real traffic has a few hundred distinct
#: ones, and a lookup is cheaper than matching every part (the hot path of a click).
REMEMBERED = 4096


class Agents:
    """Tells machine requests from people's, by the lists a WebConfig gives."""

    def __init__(
        self,
        scanners: Sequence[str],
        image_proxies: Sequence[str],
        apple_networks: Sequence[str],
    ) -> None:
        self._scanners = _any_of(scanners)
        self._proxies = _any_of(image_proxies)
        self._apple = tuple(ipaddress.ip_network(n, strict=False) for n in apple_networks)
        self._known: dict[str, bool] = {}
        self._known_proxies: dict[str, bool] = {}

    def scanner(self, user_agent: str) -> bool:
        """A link scanner or prefetcher (or no User-Agent at all: browsers send one)."""
        known = self._known.get(user_agent)
        if known is None:
            known = not user_agent or self._scanners.search(user_agent) is not None
            if len(self._known) >= REMEMBERED:
                self._known.clear()
            self._known[user_agent] = known
        return known

    def proxy(self, user_agent: str, client: str | None) -> bool:
        """An image proxy (or a scanner) fetching the open pixel."""
        known = self._known_proxies.get(user_agent)
        if known is None:
            known = self.scanner(user_agent) or self._proxies.search(user_agent) is not None
            if len(self._known_proxies) >= REMEMBERED:
                self._known_proxies.clear()
            self._known_proxies[user_agent] = known
        if known:
            return True
        agent = user_agent.lower()
        if agent.strip() == APPLE_PROXY_AGENT and client is not None:
            try:
                address = ipaddress.ip_address(client)
            except ValueError:
                return False
            return any(address in network for network in self._apple)
        return False


def _any_of(parts: Sequence[str]) -> re.Pattern[str]:
    """A pattern finding any of `parts`, in any case (never matching when there are none)."""
    if not parts:
        return re.compile(r"(?!)")
    return re.compile("|".join(re.escape(p) for p in parts), re.IGNORECASE)
