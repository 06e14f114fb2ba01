"""Who is calling, as far as metrics care: an API key resolved to a tier and a user.

Both integrations (aiohttp and ASGI) resolve the ``X-API-Key`` header through
a :data:`Resolver`; the user id only ever feeds the HMAC of the active-user
sketches, never a label or a log record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as far as metrics care: a tier and an optional user id.

    The user id is only ever used as input to the HMAC (active users); it
    never reaches a label or a log record.
    """

    tier: str
    user: str | None = None


ANONYMOUS = Identity("unknown")
Resolver = Callable[[str | None], Identity]
"""Maps the raw ``X-API-Key`` header value (None when absent) to an :class:`Identity`."""


def key_table_resolver(table: Mapping[str, object]) -> Resolver:
    """Resolve API keys from a table of key -> object with ``tier`` and ``user``.

    Identities are built once, so a resolved request costs one dict lookup;
    a missing or unknown key is :data:`ANONYMOUS` (tier ``unknown``).
    """
    identities = {key: Identity(entry.tier, entry.user) for key, entry in table.items() if key}
    get = identities.get

    def resolve(api_key: str | None) -> Identity:
        return get(api_key, ANONYMOUS) if api_key else ANONYMOUS

    # The middlewares look keys up in this dict directly (one C call per request);
    # it has no empty key, so a missing or empty header is ANONYMOUS either way.
    resolve.identities = identities  # type: ignore[attr-defined]
    return resolve


def lookup(resolver: Resolver) -> Callable[[str | None, Identity], Identity]:
    """``resolver`` as ``get(api_key, ANONYMOUS)``: a dict's ``get`` for key-table resolvers."""
    identities = getattr(resolver, "identities", None)
    if isinstance(identities, dict) and "" not in identities and None not in identities:
        return identities.get
    return lambda api_key, default: resolver(api_key)

