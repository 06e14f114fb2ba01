"""Privacy operations (admin token): delete a user's stored data, opt out, opt back in,
record consent (``privacy.consent``), export everything stored for a user.

With previous HMAC secrets configured (a rotation), a user is looked up by
the hash of every secret: deletion and opt-in reach rows stored before the
rotation; an opt-out is stored under the current secret.

Consent (``exporter.store.consent``): ``granted`` records the decision and
lifts an API opt-out (as opt-in does); ``withdrawn`` records it and opts the
user out, so it acts like an opt-out in either consent mode.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import ValidationError

from exporter.api.body import read_body
from exporter.api.errors import ApiError, invalid
from exporter.api.models import (ConsentIn, ConsentState, OptOutState, RemovedCounts, UserExport, UserPath,
                                 UserRemoved)

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
    api.activity.consented.difference_update(hashes)  # consent history goes with the data
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
    await _lift_opt_out(api, _user_hashes(api, request))
    return web.json_response(OptOutState(opted_out=False).model_dump())


def _refuse_config_opt_out(api: IngestApi, hashes: list[str]) -> None:
    if hashes[0] in api.config_opted_out:
        raise ApiError(409, "opted_out_by_config", "user_id",
                       "this user is opted out in the configuration (opted_out_users); change it there")


async def _lift_opt_out(api: IngestApi, hashes: list[str]) -> None:
    """Remove API opt-outs under every secret; 409 for a user opted out in the configuration."""
    _refuse_config_opt_out(api, hashes)
    for hashed in hashes:
        await api.store.set_opt_out(hashed, False)
    api.backlog.fold()  # events accepted while opted out stay untracked
    api.activity.opted_out.difference_update(hashes)


async def consent(api: IngestApi, request: web.Request) -> web.Response:
    api.auth.admin(request)
    hashes = _user_hashes(api, request)
    try:
        decision = ConsentIn.model_validate_json(
            await read_body(request, api.config.max_body_bytes, api.config.max_compression_ratio))
    except ValidationError as exc:
        raise invalid(exc) from None
    if decision.state == "granted":
        _refuse_config_opt_out(api, hashes)  # before anything is recorded
        await api.store.record_consent(hashes[0], "granted", decision.policy_version, api.clock())
        await _lift_opt_out(api, hashes)
        api.activity.consented.add(hashes[0])
    else:
        await api.store.record_consent(hashes[0], "withdrawn", decision.policy_version, api.clock())
        api.backlog.fold()  # events accepted before the withdrawal count as they did when they arrived
        api.activity.opted_out.add(hashes[0])
        api.activity.consented.difference_update(hashes)
    log.info("consent recorded", extra={"fields": {"state": decision.state}})
    return web.json_response(ConsentState(state=decision.state, policy_version=decision.policy_version,
                                          tracked=not api.activity.is_opted_out(hashes[0])).model_dump())


async def export_user(api: IngestApi, request: web.Request) -> web.Response:
    api.auth.admin(request)
    hashes = _user_hashes(api, request)
    await api.flush_activity()  # buffered rows are part of what is stored for the user
    await api.errors.write()
    rows = await api.store.export_user(*hashes)
    current = api.activity.digest(request.match_info["user_id"])
    history = rows["consents"]
    export = UserExport(consent_mode=api.config.privacy.consent, opted_out=bool(rows["opt_outs"]) or any(
                            hashed in api.activity.opted_out for hashed in hashes),
                        consent=history[-1]["state"] if history else None,
                        tracked=not api.activity.is_opted_out(current), **rows)
    return web.json_response(export.model_dump())
