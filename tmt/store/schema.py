"""The JSON Schemas of the data formats, and checks against them.

Three formats, one schema file each in `tmt/store/schemas/` (shipped with the
package; `data_manifests/` at the top of the repository holds identical copies
for readers of the formats):

    manifest_row   one line of a raw manifest (`<split>.jsonl.gz`)
    store_index    a token store's `index.json`
    store_meta     one line of a token store's `meta.<shard>.jsonl.gz`

`check(obj, kind, where)` raises a StoreError naming the place (file and line),
the field and what the schema expects. The schemas are the one definition of
each format; the code adds only what a schema cannot say (unique ids, files
present, lengths matching the `.idx`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tmt.store import StoreError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KINDS: tuple[str, ...] = ("manifest_row", "store_index", "store_meta")


def schema_path(kind: str) -> Path:
    """The schema file of one format (see KINDS)."""
    if kind not in KINDS:
        raise StoreError(f"unknown schema '{kind}'; expected one of {', '.join(KINDS)}")
    return SCHEMA_DIR / f"{kind}.schema.json"


@functools.cache
def load_schema(kind: str) -> dict[str, Any]:
    """The parsed schema of one format."""
    path = schema_path(kind)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"cannot read the schema {path} ({e}); reinstall tmt") from None
    if not isinstance(schema, dict):
        raise StoreError(f"{path} is not a JSON Schema object; reinstall tmt")
    return schema


@functools.cache
def _validator(kind: str) -> Any:
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        raise StoreError("checking the data formats needs the jsonschema package: pip install jsonschema") from None
    return Draft202012Validator(load_schema(kind))


def _field(path: Iterable[Any]) -> str:
    """A JSON path as a dotted field name: shards[0].files."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe(error: Any) -> str:
    """One sentence for one jsonschema error: the field and what is expected."""
    field = _field(error.absolute_path)
    value = error.instance
    kind = error.validator
    if kind == "required":
        # one error per missing property; its message starts with the property's repr
        missing = error.message.partition(" is a required property")[0].strip("'\"")
        name = f"{field}.{missing}" if field else missing
        return f"field '{name}' is missing (required)"
    if "propertyNames" in error.absolute_schema_path:
        where = f"field '{field}'" if field else "the row"
        allowed = error.schema.get("enum") if isinstance(error.schema, dict) else None
        want = f"one of {', '.join(map(str, allowed))}" if allowed else "a valid name"
        return f"{where} has key {value!r}, expected {want}"
    name = f"field '{field}'" if field else "the value"
    if kind == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"{name} must be {' or '.join(types)}, got {json.dumps(value)}"
    if kind == "enum":
        return f"{name} must be one of {', '.join(map(str, error.validator_value))}, got {json.dumps(value)}"
    if kind == "const":
        return f"{name} must be {json.dumps(error.validator_value)}, got {json.dumps(value)}"
    if kind == "pattern":
        return f"{name} must match {error.validator_value}, got {json.dumps(value)}"
    if kind == "minLength":
        return f"{name} must be a non-empty string, got {json.dumps(value)}"
    if kind == "minimum":
        return f"{name} must be >= {error.validator_value}, got {json.dumps(value)}"
    if kind == "uniqueItems":
        return f"{name} must not repeat items, got {json.dumps(value)}"
    return f"{name}: {error.message}"


def errors(obj: Any, kind: str) -> list[str]:
    """Every problem of `obj` against the schema of `kind`, one sentence each (empty: valid)."""
    found = sorted(_validator(kind).iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    return [_describe(e) for e in found]


def check(obj: Any, kind: str, where: str) -> None:
    """Raise StoreError `<where>: <first problem>` unless `obj` follows the schema of `kind`."""
    v = _validator(kind)
    if v.is_valid(obj):
        return
    problems = errors(obj, kind)
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    raise StoreError(f"{where}: {problems[0]}{more}; see {schema_path(kind).name}")
