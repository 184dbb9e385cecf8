"""A safe JSON codec for physical plans: what the issuer sends every party of a network query.

Nothing received from a peer is unpickled or evaluated. A plan is encoded as JSON objects tagged
with a type name (`{"$": "EquiJoin", ...fields}`); decoding accepts only the types registered
below (the steps of `planner/physical.py` and the value objects they carry), only their declared
fields, and checks every value against the field's type annotation (str, int, float, bool, None,
tuples, unions, registered dataclasses). Anything else is a `ProtocolError` naming the path of the
offending value.

    >>> from sqlsecure.planner.physical import RunLocal
    >>> decode_plan(encode_plan(RunLocal("bank", "SELECT 1", "r0"))) == RunLocal("bank", "SELECT 1", "r0")
    True
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing

from sqlsecure.errors import ProtocolError
from sqlsecure.policy.masking import Mask as MaskSpec
from sqlsecure.planner import physical
from sqlsecure.policy.privacy import NoiseSpec, Release

TYPE_KEY = "$"
MAX_PLAN_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32

REGISTRY: dict[str, type] = {
    cls.__name__: cls
    for cls in (physical.RunLocal, physical.EquiJoin, physical.Compute, physical.Reveal, physical.HEGroupBy,
                physical.SecureStage, physical.SecretQuery, physical.EnclaveStage, physical.Noise, physical.Mask, physical.Finish,
                physical.PhysicalPlan, Release, NoiseSpec)
}
REGISTRY["MaskSpec"] = MaskSpec  # sqlsecure.policy.masking.Mask (the step of the same name is physical.Mask)
_NAMES = {cls: name for name, cls in REGISTRY.items()}
_HINTS: dict[type, dict[str, object]] = {}
# Where the planner's values are wider than the field's annotation: a UNION ALL stage's inputs have
# no single owner (None), its branches' owners are in `union`.
OVERRIDES = {(physical.SecureStage, "inputs"): tuple[tuple[str | None, str], ...]}


def _hints(cls: type) -> dict[str, object]:
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls)
        hints.update({f: h for (c, f), h in OVERRIDES.items() if c is cls})
        _HINTS[cls] = hints
    return _HINTS[cls]


def _encode(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = _NAMES.get(type(value))
        if name is None:
            raise ProtocolError(f"cannot encode a {type(value).__name__} in a plan")
        out = {TYPE_KEY: name}
        for f in dataclasses.fields(value):
            out[f.name] = _encode(getattr(value, f.name))
        return out
    if isinstance(value, (tuple, list, frozenset)):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise ProtocolError(f"cannot encode a {type(value).__name__} in a plan")


def encode_plan(plan) -> bytes:
    """A plan (or any registered step) as canonical UTF-8 JSON."""
    return json.dumps(_encode(plan), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _fail(path: str, text: str):
    raise ProtocolError(f"malformed plan at {path or 'top'}: {text}")


def _decode(value, hint, path: str, depth: int):
    if depth > MAX_DEPTH:
        _fail(path, "nested too deeply")
    origin = typing.get_origin(hint)
    if hint is typing.Any or hint is object:
        if isinstance(value, dict):
            return _decode_object(value, path, depth)
        _fail(path, f"expected an object, got {type(value).__name__}")
    if origin in (typing.Union, types.UnionType):
        problems = []
        for option in typing.get_args(hint):
            try:
                return _decode(value, option, path, depth)
            except ProtocolError as exc:
                problems.append(str(exc))
        _fail(path, f"{value!r:.60} matches none of {hint}")
    if hint is type(None):
        if value is None:
            return None
        _fail(path, "expected null")
    if hint is bool:
        if isinstance(value, bool):
            return value
        _fail(path, "expected a boolean")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _fail(path, "expected an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        _fail(path, "expected a number")
    if hint is str:
        if isinstance(value, str):
            return value
        _fail(path, "expected a string")
    if origin in (tuple, frozenset):
        if not isinstance(value, list):
            _fail(path, "expected a list")
        args = typing.get_args(hint)
        if origin is frozenset or (len(args) == 2 and args[1] is Ellipsis):
            items = [_decode(v, args[0], f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        else:
            if len(value) != len(args):
                _fail(path, f"expected {len(args)} items, got {len(value)}")
            items = [_decode(v, a, f"{path}[{i}]", depth + 1) for i, (v, a) in enumerate(zip(value, args))]
        return frozenset(items) if origin is frozenset else tuple(items)
    if isinstance(hint, type) and hint in _NAMES:
        if not isinstance(value, dict) or value.get(TYPE_KEY) != _NAMES[hint]:
            _fail(path, f"expected a {_NAMES[hint]}")
        return _decode_object(value, path, depth)
    if hint is physical.Step:
        obj = _decode_object(value, path, depth) if isinstance(value, dict) else _fail(path, "expected a step")
        if not isinstance(obj, physical.Step):
            _fail(path, f"{type(obj).__name__} is not a plan step")
        return obj
    _fail(path, f"unsupported field type {hint}")


def _decode_object(value: dict, path: str, depth: int):
    name = value.get(TYPE_KEY)
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        _fail(path, f"unknown type {name!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields) - {TYPE_KEY})
    if unknown:
        _fail(path, f"unknown fields {unknown} for {name}")
    kwargs = {}
    for fname, f in fields.items():
        if fname not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                _fail(path, f"{name} lacks field {fname!r}")
            continue
        kwargs[fname] = _decode(value[fname], hints[fname], f"{path}.{fname}" if path else fname, depth + 1)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        _fail(path, f"{name}: {exc}")


def decode_plan(data: bytes, expect: type | None = None):
    """Decode what `encode_plan` produced; `expect` (e.g. PhysicalPlan) checks the top-level type."""
    if len(data) > MAX_PLAN_BYTES:
        raise ProtocolError(f"plan of {len(data)} bytes is larger than {MAX_PLAN_BYTES}")
    try:
        raw = json.loads(data.decode("utf-8"), parse_constant=lambda c: _fail("", f"{c} is not allowed"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"malformed plan: {exc}") from None
    if not isinstance(raw, dict):
        _fail("", "expected an object")
    obj = _decode_object(raw, "", 0)
    if expect is not None and not isinstance(obj, expect):
        _fail("", f"expected a {expect.__name__}, got {type(obj).__name__}")
    return obj
