"""The compiled campaigns an engine delivers, from memory or (after a restart) the spool."""

from __future__ import annotations

import msgspec

from .. import _core
from ..spooler import Spooler
from ..wire import CampaignSpec

_specs = msgspec.msgpack.Decoder(CampaignSpec)


class Campaigns:
    """Compiled campaigns by id. A campaign that cannot be had (missing from the spool,
    or a stored spec that no longer compiles, say after an upgrade) keeps the reason,
    which its recipients' `failed` outcome carries."""

    def __init__(self, spooler: Spooler) -> None:
        self._spooler = spooler
        self._compiled: dict[str, _core.CompiledCampaign] = {}
        self._unusable: dict[str, str] = {}
        self._pools: dict[str, str | None] = {}

    def add(
        self, campaign_id: str, compiled: _core.CompiledCampaign, pool: str | None = None
    ) -> None:
        self._compiled[campaign_id] = compiled
        self._pools[campaign_id] = pool
        self._unusable.pop(campaign_id, None)

    def pool(self, campaign_id: str) -> str | None:
        """The egress pool the campaign names (None: the default pool)."""
        return self._pools.get(campaign_id)

    def get(self, campaign_id: str) -> _core.CompiledCampaign | None:
        """The compiled campaign, if `load` found it usable."""
        return self._compiled.get(campaign_id)

    def why_unusable(self, campaign_id: str) -> str | None:
        return self._unusable.get(campaign_id)

    async def load(self, campaign_id: str) -> None:
        """Compiles a campaign from its stored spec, once; records why when it cannot."""
        if campaign_id in self._compiled or campaign_id in self._unusable:
            return
        spec = await self._spooler.call(self._spooler.spool.campaign_spec, campaign_id)
        if spec is None:
            self._unusable[campaign_id] = f"campaign {campaign_id!r} is missing from the spool"
            return
        try:
            self._compiled[campaign_id] = _core.compile_campaign(spec)
            self._pools[campaign_id] = _specs.decode(spec).pool
        except Exception as e:
            self._unusable[campaign_id] = (
                f"campaign {campaign_id!r} in the spool no longer compiles: {type(e).__name__}: {e}"
            )
