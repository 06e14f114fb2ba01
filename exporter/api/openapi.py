"""The OpenAPI 3.1 document, generated from the schemas the handlers validate with."""

from __future__ import annotations

import msgspec
from pydantic.json_schema import models_json_schema

from exporter import __version__
from exporter.api import errors_api
from exporter.api.models import (ConsentIn, ConsentState, ErrorBody, FeedbackCreated, FeedbackIn, FeedbackInsights,
                                 FeedbackPage, FeedbackQuery, InsightsQuery, OptOutState, UserExport, UserPath,
                                 UserRemoved)
from exporter.config import Config
from exporter.ingest.decode import EventBatch, EventBatchResult

PREFIX = "/api/v1"


def _error_responses(*codes: int) -> dict:
    reasons = {400: "invalid input; `field` names it", 401: "missing or wrong credentials; nothing recorded",
               404: "no such record or group", 409: "conflict with the configuration", 413: "body or batch over the limit; nothing recorded",
               429: "the API key is over its feedback rate; nothing recorded, retry after `Retry-After` seconds",
               503: "storage unavailable; retry"}
    return {str(code): {"description": reasons[code],
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
            for code in codes}


def _json(ref: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def openapi_document(config: Config) -> dict:
    """OpenAPI 3.1 for every endpoint, from the models the handlers validate with."""
    models = [(FeedbackIn, "validation"), (FeedbackCreated, "serialization"), (FeedbackPage, "serialization"),
              (ErrorBody, "serialization"), (UserRemoved, "serialization"), (OptOutState, "serialization"),
              (FeedbackInsights, "serialization"), (ConsentIn, "validation"), (ConsentState, "serialization"),
              (UserExport, "serialization"), *errors_api.OPENAPI_MODELS]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = top["$defs"]
    # The event schemas are msgspec structs (exporter.ingest.schemas).
    schemas.update(msgspec.json.schema_components((EventBatch, EventBatchResult),
                                                  ref_template="#/components/schemas/{name}")[1])
    schemas["EventBatch"]["properties"]["events"]["maxItems"] = config.max_batch_items
    parameters, insights_parameters = ([{"name": name, "in": "query", "required": False, "schema": prop,
                                         "description": prop.get("description", "")}
                                        for name, prop in model.model_json_schema()["properties"].items()]
                                       for model in (FeedbackQuery, InsightsQuery))
    user_param = {"name": "user_id", "in": "path", "required": True,
                  "schema": UserPath.model_json_schema()["properties"]["user_id"],
                  "description": "the raw user id (as in the API-key table); hashed on arrival"}
    admin = [{"adminToken": []}]
    json_body = lambda ref: {"required": True, "content": {"application/json": {"schema": {  # noqa: E731
        "$ref": f"#/components/schemas/{ref}"}}}}
    paths = {
        f"{PREFIX}/events": {"post": {
            "summary": "Ingest a batch of typed events",
            "description": "Valid items are recorded even when others are invalid; each rejected item is listed "
                           "with its index, field and reason. An event whose `id` was accepted recently is skipped. "
                           f"Body at most {config.max_body_bytes} bytes, at most {config.max_batch_items} events.",
            "operationId": "postEvents", "security": [{"ingestToken": []}],
            "requestBody": json_body("EventBatch"),
            "responses": {"200": _json("EventBatchResult", "per-item result"), **_error_responses(400, 401, 413)},
        }},
        f"{PREFIX}/feedback": {
            "post": {
                "summary": "Submit feedback (stored durably before the 201)",
                "description": "Tier and user come from the API key. A bug rated 2 or lower is urgent and "
                               "notifies the configured webhooks in the background.",
                "operationId": "postFeedback", "security": [{"apiKey": []}],
                "requestBody": json_body("FeedbackIn"),
                "responses": {"201": _json("FeedbackCreated", "stored"),
                              **_error_responses(400, 401, 413, 429, 503)},
            },
            "get": {
                "summary": "List stored feedback, newest first (JSON pages or CSV export)",
                "operationId": "listFeedback", "security": admin,
                "parameters": parameters,
                "responses": {"200": {"description": "a page of feedback, or CSV with ?format=csv", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/FeedbackPage"}},
                    "text/csv": {"schema": {"type": "string"}}}}, **_error_responses(400, 401, 503)},
            },
        },
        f"{PREFIX}/feedback/insights": {"get": {
            "summary": "Pain points and improvement suggestions per feature over a window",
            "description": "Pain points: features ranked by bugs + low ratings (<= 2) + negative texts (sentiment "
                           "<= -0.05). Suggestions: features ranked by feature requests. Feedback naming no feature "
                           "is counted as `unattributed`. Each entry has up to 3 of its latest texts.",
            "operationId": "feedbackInsights", "security": admin, "parameters": insights_parameters,
            "responses": {"200": {"description": "the rankings, or CSV with ?format=csv", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/FeedbackInsights"}},
                "text/csv": {"schema": {"type": "string"}}}}, **_error_responses(400, 401, 503)},
        }},
        f"{PREFIX}/users/{{user_id}}": {"delete": {
            "summary": "Delete every stored record of a user",
            "operationId": "deleteUser", "security": admin, "parameters": [user_param],
            "responses": {"200": _json("UserRemoved", "rows removed, per table"), **_error_responses(400, 401, 503)},
        }},
        f"{PREFIX}/users/{{user_id}}/opt-out": {"post": {
            "summary": "Opt a user out of per-user tracking (persisted)",
            "operationId": "optOut", "security": admin, "parameters": [user_param],
            "responses": {"200": _json("OptOutState", "opted out"), **_error_responses(400, 401, 503)},
        }},
        f"{PREFIX}/users/{{user_id}}/opt-in": {"post": {
            "summary": "Undo an opt-out made through the API",
            "operationId": "optIn", "security": admin, "parameters": [user_param],
            "responses": {"200": _json("OptOutState", "opted in"), **_error_responses(400, 401, 409, 503)},
        }},
        f"{PREFIX}/users/{{user_id}}/consent": {"post": {
            "summary": "Record a user's consent decision (privacy.consent)",
            "description": "`granted` records consent and lifts an API opt-out; `withdrawn` records the withdrawal "
                           "and opts the user out. With privacy.consent opt_in nothing per user is kept until "
                           "consent is granted.",
            "operationId": "recordConsent", "security": admin, "parameters": [user_param],
            "requestBody": json_body("ConsentIn"),
            "responses": {"200": _json("ConsentState", "recorded"), **_error_responses(400, 401, 409, 503)},
        }},
        f"{PREFIX}/users/{{user_id}}/export": {"get": {
            "summary": "Everything stored for a user, with opt-out and consent state and history (right of access)",
            "operationId": "exportUser", "security": admin, "parameters": [user_param],
            "responses": {"200": _json("UserExport", "the user's stored rows, per table"),
                          **_error_responses(400, 401, 503)},
        }},
        **errors_api.openapi_paths(PREFIX, _error_responses, _json),
        f"{PREFIX}/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
        }},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Clary AI exporter API", "version": __version__,
                 "description": "Event ingestion, feedback and privacy operations of clary-exporter."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ingestToken": {"type": "http", "scheme": "bearer", "description": "ingest_tokens / CLARY_INGEST_TOKENS"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "admin_token / CLARY_ADMIN_TOKEN"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "a Clary API key (api_keys); tier and user come from it"},
            },
        },
    }

