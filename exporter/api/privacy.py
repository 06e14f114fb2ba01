"""Privacy operations (admin token): delete a user's stored data, opt out, opt back in.

With previous HMAC secrets configured (a rotation), a user is looked up by
the hash of every secret: deletion and opt-in reach rows stored before the
rotation; an opt-out is stored under the current secret.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import ValidationError

from exporter.api.errors import ApiError, invalid
from exporter.api.models import OptOutState, RemovedCounts, UserPath, UserRemoved

if TYPE_CHECKING:
    from exporter.api.app import IngestApi

log = logging.getLogger(__name__)


def _user_hashes(api: IngestApi, request: web.Request) -> list[str]:
    """The user's hash under every configured secret, the current one first."""
    try:
        user = UserPath.model_validate({"user_id": request.match_info["user_id"]}).user_id
    except ValidationError as exc:
        raise invalid(exc) from None
    return api.activity.hashes(user)

async def delete_user(api: IngestApi, request: web.Request) -> web.Response:
    api.auth.admin(request)
    hashes = _user_hashes(api, request)
    await api.flush_activity()  # buffered rows reach the table, then go with it
    await api.errors.write()  # so do error records still queued
    api.activity.forget(*hashes)
    removed = await api.store.delete_user(*hashes)
    log.info("user data deleted", extra={"fields": {"removed": sum(removed.values())}})
    return web.json_response(UserRemoved(removed=RemovedCounts(**removed), total=sum(removed.values())).model_dump())

async def opt_out(api: IngestApi, request: web.Request) -> web.Response:
    api.auth.admin(request)
    hashed = _user_hashes(api, request)[0]
    await api.store.set_opt_out(hashed, True, api.clock())
    api.backlog.fold()  # events accepted before the opt-out count as they did when they arrived
    api.activity.opted_out.add(hashed)  # earlier activity, buffered or stored, stays (DELETE removes it)
    return web.json_response(OptOutState(opted_out=True).model_dump())

async def opt_in(api: IngestApi, request: web.Request) -> web.Response:
    api.auth.admin(request)
    hashes = _user_hashes(api, request)
    if hashes[0] in api.config_opted_out:
        raise ApiError(409, "opted_out_by_config", "user_id",
                       "this user is opted out in the configuration (opted_out_users); change it there")
    for hashed in hashes:
        await api.store.set_opt_out(hashed, False)
    api.backlog.fold()  # events accepted while opted out stay untracked
    api.activity.opted_out.difference_update(hashes)
    return web.json_response(OptOutState(opted_out=False).model_dump())
