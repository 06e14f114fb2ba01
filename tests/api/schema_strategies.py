"""JSON schema -> hypothesis: values valid for a schema of the OpenAPI document, optionally fuzzed.

A small translator, enough for the schemas exporter.api.openapi serves; used
by the OpenAPI fuzzing (tests/api/test_openapi.py) and to generate valid events
for the bulk-recording properties (tests/ingest/).
"""

from __future__ import annotations

from hypothesis import strategies as st

JSON_SCALARS = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | st.text(max_size=20)
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def from_schema(schema: dict, defs: dict, fuzz: bool) -> st.SearchStrategy:
    """Values valid for ``schema``; with ``fuzz``, any node may be replaced by arbitrary JSON."""
    strategy = _valid(schema, defs, fuzz)
    return st.one_of(strategy, strategy, strategy, ANY_JSON) if fuzz else strategy


def _valid(schema: dict, defs: dict, fuzz: bool) -> st.SearchStrategy:
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[1]], defs, fuzz)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return st.one_of([from_schema(s, defs, fuzz) for s in schema[key]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes().map(lambda d: d.isoformat())
        pattern = schema.get("pattern")
        size = {"min_size": schema.get("minLength", 0), "max_size": min(schema.get("maxLength", 30), 30)}
        if pattern:
            return st.from_regex(pattern, fullmatch=True).filter(
                lambda s: size["min_size"] <= len(s) <= schema.get("maxLength", 10**6))
        return st.text(**size)
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**63)), schema.get("maximum", 2**63))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(schema.get("items", {}), defs, fuzz)
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 6), 6))
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        fixed = {name: from_schema(s, defs, fuzz) for name, s in props.items() if name in required}
        optional = {name: from_schema(s, defs, fuzz) for name, s in props.items() if name not in required}
        extra = schema.get("additionalProperties")
        base = st.fixed_dictionaries(fixed, optional=optional)
        if isinstance(extra, dict):
            base = st.tuples(base, st.dictionaries(st.text(min_size=1, max_size=10), from_schema(extra, defs, fuzz),
                                                   max_size=min(schema.get("maxProperties", 3), 3))).map(
                lambda pair: {**pair[1], **pair[0]})
        if fuzz:
            base = st.tuples(base, st.sampled_from(["keep", "keep", "drop", "add"]), st.text(max_size=8), ANY_JSON).map(
                _mutate_object)
        return base
    return ANY_JSON  # an unconstrained schema (JsonValue)


def _mutate_object(args):
    obj, how, key, junk = args
    obj = dict(obj)
    if how == "drop" and obj:
        obj.pop(sorted(obj)[0])
    elif how == "add":
        obj[key or "x"] = junk
    return obj
