"""An OpenAPI 3.1 document of the HTTP API, generated from the registered functions' validators."""

from __future__ import annotations

from typing import Any

from ..registry import Registry

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["code", "message"],
}


def _lift_defs(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """msgspec puts shared types under ``$defs``; OpenAPI wants them under components/schemas."""
    for name, body in schema.pop("$defs", {}).items():
        defs[name] = body
    return schema


def openapi_document(registry: Registry) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for spec in sorted(registry, key=lambda s: s.path):
        if spec.internal:
            continue
        module, _, name = spec.path.partition(":")
        args = _lift_defs(dict(spec.args.json_schema()), defs)
        returns = _lift_defs(dict(spec.returns.json_schema()), defs)
        paths[f"/api/run/{module}/{name}"] = {
            "post": {
                "operationId": spec.path.replace("/", "_").replace(":", "__"),
                "summary": (spec.fn.__doc__ or "").strip().split("\n")[0] or spec.path,
                "tags": [spec.kind],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "properties": {"args": args, "format": {"enum": ["convex_encoded_json", "json"]}},
                        "required": ["args"],
                    }}},
                },
                "responses": {
                    "200": {"description": "the function ran (status success, or error for an AppError)",
                            "content": {"application/json": {"schema": {
                                "type": "object",
                                "properties": {"status": {"enum": ["success", "error"]}, "value": returns,
                                               "errorMessage": {"type": "string"}, "errorData": {},
                                               "logLines": {"type": "array", "items": {"type": "string"}}},
                            }}}},
                    "default": {"description": "rejected before running (bad args, not found, no access)",
                                "content": {"application/json": {"schema": _ERROR}}},
                },
            }
        }
    text = str(paths)
    if "#/$defs/" in text:
        import json

        paths = json.loads(json.dumps(paths).replace("#/$defs/", "#/components/schemas/"))
        defs = json.loads(json.dumps(defs).replace("#/$defs/", "#/components/schemas/"))
    return {
        "openapi": "3.1.0",
        "info": {"title": "tidewater functions", "version": "1"},
        "paths": paths,
        "components": {"schemas": defs},
    }
