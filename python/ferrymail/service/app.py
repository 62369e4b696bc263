"""The /v1 service API as a raw ASGI app: routing, authentication, JSON in and out.

Raw ASGI like web/app.py rather than a framework: there are nine routes, the one
streamed body (recipients) needs the ASGI receive channel directly anyway, and msgspec
does the decoding and validation a framework would add."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from ..campaign import Campaign, DkimKey, Tracking, Unsubscribe, Verp
from ..engine.engine import Engine
from ..errors import ConfigError, TemplateError
from ..spooler import Spooler
from ..submit import CHUNK as SUBMIT_CHUNK
from ..submit import SubmitResult
from ..wire import Recipient
from . import bodies, keys, models
from .errors import ApiError
from .openapi import document
from .stored import from_spec
from .types import Receive, Scope, Send

_log = logging.getLogger(__name__)

#: Every body but the recipients' (a campaign with its templates inline).
BODY_LIMIT = 4 * 1024 * 1024
#: The recipients' body (streamed: this bounds one request, not memory).
RECIPIENTS_LIMIT = 4 * 1024 * 1024 * 1024
#: One recipient (a line, or an element of an array).
RECORD_LIMIT = 1024 * 1024
#: Recipients handed to Engine.submit at a time (its own chunk: one transaction each).
CHUNK = SUBMIT_CHUNK
#: Refused lines whose reasons the answer lists.
REASONS = 5

_JSON = [(b"content-type", b"application/json")]
_encoder = msgspec.json.Encoder()
_campaign_in = msgspec.json.Decoder(models.CampaignIn)
_suppression_in = msgspec.json.Decoder(models.SuppressionIn)
_line = msgspec.json.Decoder(dict[str, Any])

_CAMPAIGN = re.compile(r"^/v1/campaigns/([^/]+)(/recipients|/cancel)?$")
_SUPPRESSION = re.compile(r"^/v1/suppressions/([^/]+)$")


class Api:
    """The API over an open Engine (submit, cancel, flush) and a Spooler on the same
    spool, a light connection (keys, status, reports, suppressions)."""

    def __init__(
        self,
        engine: Engine,
        spooler: Spooler,
        *,
        body_limit: int = BODY_LIMIT,
        recipients_limit: int = RECIPIENTS_LIMIT,
        dkim_keys: Mapping[str, DkimKey] | None = None,
    ) -> None:
        self._engine = engine
        self._dkim_keys = dict(dkim_keys or {})
        self._spooler = spooler
        self._body_limit = body_limit
        self._recipients_limit = recipients_limit
        # Campaigns compiled (PUT, or made again from the spool's spec after a restart).
        self._campaigns: dict[str, Campaign] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body = await self._route(scope, receive)
        except ApiError as e:
            status, body = e.status, models.ErrorOut(e.error, e.detail)
        except Exception:
            _log.exception("service API: %s %s failed", scope["method"], scope["path"])
            status, body = 500, models.ErrorOut("internal", "the server failed; see its log")
        payload = body if isinstance(body, bytes) else _encoder.encode(body)
        headers = [*_JSON, (b"content-length", str(len(payload)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        method, path = scope["method"], scope["path"]
        if path == "/v1/openapi.json" and method == "GET":
            return 200, document()
        read_only = await self._authenticate(scope)
        writes = method not in ("GET", "HEAD")
        if writes and read_only:
            raise ApiError(403, "read-only", "this API key may only read")
        if path == "/v1/status" and method == "GET":
            return 200, await self._spooler.call(self._spooler.spool.status)
        if path == "/v1/flush" and method == "POST":
            await bodies.whole(receive, self._body_limit)
            return 200, models.Flushed(await self._engine.flush())
        if match := _CAMPAIGN.match(path):
            campaign_id = match[1]  # (ASGI's path is percent-decoded already)
            match (match[2], method):
                case (None, "PUT"):
                    return 200, await self._put_campaign(campaign_id, receive)
                case (None, "GET"):
                    return 200, await self._report(campaign_id)
                case ("/recipients", "POST"):
                    return 200, await self._submit(campaign_id, scope, receive)
                case ("/cancel", "POST"):
                    await bodies.whole(receive, self._body_limit)
                    return 200, await self._cancel(campaign_id)
            raise ApiError(405, "method-not-allowed", f"{method} {path}")
        if match := _SUPPRESSION.match(path):
            return await self._suppression(method, match[1], receive)
        raise ApiError(404, "not-found", f"no such resource: {path}")

    async def _authenticate(self, scope: Scope) -> bool:
        """Whether the bearer's key is read-only; ApiError 401 (no detail: nothing to
        learn from it) for a missing or unknown key."""
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized")
        presented = keys.digest(token.strip())
        found = await self._spooler.call(self._spooler.spool.find_api_key, presented)
        # Found by its digest (an index lookup, whose timing says nothing useful: it is
        # about SHA-256 outputs); compared again in constant time all the same.
        if found is None or not keys.same(found[2], presented):
            raise ApiError(401, "unauthorized")
        return found[1]

    async def _put_campaign(self, campaign_id: str, receive: Receive) -> models.CampaignStored:
        raw = await bodies.whole(receive, self._body_limit)
        spec = _decode(_campaign_in, raw)
        unknown = [name for name in spec.dkim if name not in self._dkim_keys]
        if unknown:
            raise ApiError(
                422, "invalid", f"dkim: no key named {', '.join(map(repr, unknown))} in the "
                "server's key store (ferrymail serve --dkim-keys FILE)",
            )  # fmt: skip
        try:
            campaign = Campaign(
                id=campaign_id,
                sender=spec.sender,
                from_=spec.from_,
                subject=spec.subject,
                html=spec.html,
                text=spec.text,
                reply_to=spec.reply_to,
                headers=spec.headers,
                tracking=Tracking(**msgspec.structs.asdict(spec.tracking))
                if spec.tracking
                else None,
                unsubscribe=Unsubscribe(**msgspec.structs.asdict(spec.unsubscribe))
                if spec.unsubscribe
                else None,
                verp=Verp(spec.verp.secret) if isinstance(spec.verp, models.VerpIn) else spec.verp,
                dkim=[self._dkim_keys[name] for name in spec.dkim],
                pool=spec.pool,
            )
        except TemplateError as e:
            detail = models.TemplateErrorDetail(str(e), e.part, e.line, e.column)
            raise ApiError(422, "template", detail) from None
        except (ConfigError, TypeError, ValueError) as e:
            raise ApiError(422, "invalid", str(e)) from None
        try:
            await self._engine.submit(campaign, [])  # stores the spec, durably
        except ConfigError as e:  # another spec under this id, already sent from
            raise ApiError(409, "conflict", str(e)) from None
        self._campaigns[campaign_id] = campaign
        return models.CampaignStored(campaign_id)

    async def _campaign(self, campaign_id: str) -> Campaign:
        """The campaign PUT under this id, or the spool's (after a restart) made again
        from its stored spec; ApiError 404 when neither."""
        campaign = self._campaigns.get(campaign_id)
        if campaign is None:
            stored = await self._spooler.call(self._spooler.spool.campaign_spec, campaign_id)
            campaign = None if stored is None else from_spec(stored)
            if campaign is None:
                raise ApiError(
                    404, "not-found", f"campaign {campaign_id!r}: PUT it before its recipients"
                )
            self._campaigns[campaign_id] = campaign
        return campaign

    async def _submit(self, campaign_id: str, scope: Scope, receive: Receive) -> models.SubmitOut:
        campaign = await self._campaign(campaign_id)
        spool = self._spooler.spool
        if await self._spooler.call(spool.cancelled_at, campaign_id) is not None:
            raise ApiError(409, "cancelled", f"campaign {campaign_id!r} is cancelled")
        refused: list[models.Rejected] = []
        totals = SubmitResult(0, 0, 0, 0)
        # One batch is submitted (the spool thread inserting it) while the next is read
        # and decoded: two batches in memory at most.
        submitting: asyncio.Task[SubmitResult] | None = None

        async def submitted() -> None:
            nonlocal totals, submitting
            if submitting is not None:
                result = await submitting
                submitting = None
                totals = SubmitResult(
                    totals.accepted + result.accepted,
                    totals.rejected + result.rejected,
                    totals.suppressed + result.suppressed,
                    totals.duplicates + result.duplicates,
                )

        async def submit(batch: list[Recipient]) -> None:
            # Engine.submit of a list per batch, not of one async stream: its async
            # path waits for each item separately (a future and a wait per recipient),
            # which would cost more than everything else here.
            nonlocal submitting
            await submitted()
            submitting = asyncio.ensure_future(self._engine.submit(campaign, batch))

        batch: list[Recipient] = []
        number = refused_count = 0
        try:
            records = bodies.records(receive, self._recipients_limit, RECORD_LIMIT)
            async for record in records:
                number += 1
                if not record.strip():
                    continue
                try:
                    batch.append(_recipient(record))
                except ValueError as e:
                    refused_count += 1
                    if len(refused) < REASONS:
                        refused.append(models.Rejected(number, str(e)))
                    continue
                if len(batch) >= CHUNK:
                    await submit(batch)
                    batch = []
            if batch:
                await submit(batch)
        finally:
            # Also on an error in the body: what was accepted before it is durable
            # before the answer goes.
            await submitted()
        return models.SubmitOut(
            accepted=totals.accepted,
            duplicates=totals.duplicates,
            rejected=totals.rejected + refused_count,
            suppressed=totals.suppressed,
            reasons=refused,
        )

    async def _report(self, campaign_id: str) -> Any:
        try:
            # On the API's own connection: a report is a read (SQL aggregates over the
            # campaign's rows), and the engine's connection and thread are for delivery.
            return await self._spooler.call(self._spooler.spool.report, campaign_id)
        except ConfigError:
            raise ApiError(404, "not-found", f"no campaign {campaign_id!r}") from None

    async def _cancel(self, campaign_id: str) -> models.Cancelled:
        try:
            return models.Cancelled(campaign_id, await self._engine.cancel(campaign_id))
        except ConfigError:
            raise ApiError(404, "not-found", f"no campaign {campaign_id!r}") from None

    async def _suppression(self, method: str, address: str, receive: Receive) -> tuple[int, Any]:
        spool = self._spooler.spool
        if method == "GET":
            found = await self._spooler.call(spool.is_suppressed, address)
            return 200, models.Suppression(address, found)
        if method == "PUT":
            raw = await bodies.whole(receive, self._body_limit)
            body = _decode(_suppression_in, raw) if raw.strip() else models.SuppressionIn()
            await self._spooler.call(spool.suppress, address, body.reason)
            return 200, models.Suppression(address, True, body.reason)
        if method == "DELETE":
            if not await self._spooler.call(spool.unsuppress, address):
                raise ApiError(404, "not-found", f"{address} is not suppressed")
            return 200, models.Suppression(address, False)
        raise ApiError(405, "method-not-allowed", f"{method} /v1/suppressions/…")


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise ApiError(422, "invalid", str(e)) from None
    except msgspec.DecodeError as e:
        raise ApiError(400, "bad-json", str(e)) from None


def _recipient(line: bytes) -> Recipient:
    """One recipient (a JSON line, or an array's element) as the recipients file has
    it: {"email", "id"?, variables…}; ValueError saying what is wrong."""
    try:
        row = _line.decode(line)
    except msgspec.ValidationError:
        raise ValueError("expected a JSON object") from None
    except msgspec.DecodeError as e:
        raise ValueError(f"not valid JSON: {e}") from None
    address = row.pop("email", None)
    if not isinstance(address, str) or not address.strip():
        raise ValueError("no address in `email`")
    rid = row.pop("id", None)
    if rid is not None and not isinstance(rid, str | int):
        raise ValueError("`id` must be a string or an integer")
    return Recipient(address.strip(), row, id=rid)
