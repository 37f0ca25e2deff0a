"""Configuration: the core's property table, typed keyword arguments.

The table comes from ``runlane_conf_properties()``; nothing is duplicated
here. A keyword argument is the key with dots replaced by underscores
(``batch_window_ms=50`` for ``batch.window.ms``); a ``config=`` mapping takes
the dotted keys. Python values are checked against the key's type, converted
to the core's strings, and validated by the core (range, enum values...).
"""

from __future__ import annotations

import difflib
import json
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ._native import ffi, lib
from .errors import ConfigTypeError, InvalidValueError, UnknownKeyError, check, last_error

__all__ = ["Property", "properties", "property_names", "normalize_config", "build_conf", "conf_get", "shown_store"]


@dataclass(frozen=True)
class Property:
    """One configuration key of the core's property table."""

    name: str  #: dotted key, e.g. ``batch.window.ms``
    type: str  #: string, int, float, bool, enum or json
    default: str  #: default, as the core's string
    doc: str
    secret: bool = False
    min: Optional[int] = None
    max: Optional[int] = None
    max_bytes: Optional[int] = None
    values: Optional[Tuple[str, ...]] = None  #: enum values

    @property
    def kwarg(self) -> str:
        """The keyword-argument name (dots replaced by underscores)."""
        return self.name.replace(".", "_")

    def python_default(self) -> Any:
        """The default converted to the Python type of the key."""
        return _from_string(self, self.default)


_lock = threading.Lock()
_props: Optional[Dict[str, Property]] = None
_by_kwarg: Dict[str, Property] = {}


def _load() -> Dict[str, Property]:
    global _props
    with _lock:
        if _props is None:
            raw = json.loads(ffi.string(lib.runlane_conf_properties()).decode("utf-8"))
            props: Dict[str, Property] = {}
            for p in raw:
                values = p.get("values")
                props[p["name"]] = Property(
                    name=p["name"],
                    type=p["type"],
                    default=p.get("default", ""),
                    doc=p.get("doc", ""),
                    secret=bool(p.get("secret", False)),
                    min=p.get("min"),
                    max=p.get("max"),
                    max_bytes=p.get("max_bytes"),
                    values=tuple(values) if values is not None else None,
                )
            for prop in props.values():
                _by_kwarg[prop.kwarg] = prop
            _props = props
        return _props


def properties() -> Dict[str, Property]:
    """Every configuration key of the core, by dotted name."""
    return dict(_load())


def property_names() -> List[str]:
    """Dotted names of every configuration key."""
    return list(_load())


def _from_string(prop: Property, value: str) -> Any:
    if prop.type == "int":
        return int(value)
    if prop.type == "float":
        return float(value)
    if prop.type == "bool":
        return value == "true"
    if prop.type == "json":
        return json.loads(value)
    return value


def lookup(key: str) -> Property:
    """The property of a dotted key or a keyword name; UnknownKeyError else."""
    props = _load()
    prop = props.get(key) or _by_kwarg.get(key)
    if prop is None:
        candidates = list(props) + list(_by_kwarg)
        close = difflib.get_close_matches(key, candidates, n=1)
        hint = " (did you mean %s?)" % close[0] if close else ""
        raise UnknownKeyError('unknown configuration key "%s"%s' % (key, hint))
    return prop


def _to_string(prop: Property, value: Any) -> str:
    """Python value -> the core's string, checking the Python type."""
    if isinstance(value, str):
        return value  # the core validates it
    t = prop.type
    if t == "bool":
        if isinstance(value, bool):
            return "true" if value else "false"
        want = "a bool"
    elif t == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        want = "an int"
    elif t == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return repr(float(value))
        want = "a number"
    elif t == "json":
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        want = "a dict/list (or its JSON text)"
    else:
        want = "a str"
        if t == "enum" and prop.values:
            want = "a str, one of " + ", ".join(prop.values)
    raise ConfigTypeError(
        "%s (%s): expected %s, got %s %r" % (prop.kwarg, prop.name, want, type(value).__name__, value)
    )


#: Keyword names of the official SDK (``base_url``) and of the original
#: AssistantMessageQueue (``redis_url``, ``assistant_id``), accepted as they
#: are; the configuration key's own name wins when both are given.
ALIASES: Dict[str, str] = {
    "base_url": "openai.base.url",
    "redis_url": "store",
    "assistant_id": "openai.assistant.id",
}


def normalize_config(
    config: Optional[Mapping[str, Any]] = None, **options: Any
) -> Dict[str, str]:
    """Merges ``config`` (dotted keys) and ``options`` (underscored keys) into
    {dotted key: core string}. ``None`` values mean "the default" and are
    dropped. Raises UnknownKeyError or ConfigTypeError; ranges are checked
    by :func:`build_conf`."""
    out: Dict[str, str] = {}
    items = list((config or {}).items()) + list(options.items())
    given = set()
    for key, _ in items:
        if isinstance(key, str) and key not in ALIASES:
            try:
                given.add(lookup(key).name)
            except UnknownKeyError:
                pass
    for key, value in items:
        if not isinstance(key, str):
            raise ConfigTypeError("configuration keys are strings, got %r" % (key,))
        if key in ALIASES:
            if ALIASES[key] in given:
                continue
            key = ALIASES[key]
        prop = lookup(key)
        if value is None:
            out.pop(prop.name, None)
            continue
        out[prop.name] = _to_string(prop, value)
    return out


def build_conf(values: Mapping[str, str]) -> Any:
    """A ``runlane_conf_t *`` (freed by the garbage collector) holding
    ``values``, each validated by the core."""
    conf = lib.runlane_conf_new()
    if conf == ffi.NULL:
        raise MemoryError("runlane_conf_new: out of memory")
    conf = ffi.gc(conf, lib.runlane_conf_destroy)
    for key, value in values.items():
        # A C string ends at a NUL: refused rather than cut. Anything else
        # (lone surrogates included) is the core's to judge.
        if "\x00" in value:
            raise InvalidValueError("%s: the value must not contain NUL characters" % key)
        bvalue = value.encode("utf-8", "surrogatepass")
        rc = lib.runlane_conf_set(conf, key.encode("utf-8"), bvalue, ffi.NULL, 0)
        if rc:
            err = last_error(rc)
            prop = _load().get(key)
            if prop is not None and prop.kwarg != key:
                err.args = ("%s (keyword %s)" % (err.message, prop.kwarg),)
                err.message = err.args[0]
            raise err
    return conf


def conf_get(conf: Any, key: str) -> str:
    """The value of ``key`` as the core shows it (``runlane_conf_get``):
    secrets read back masked, the store URL with its password masked."""
    bkey = key.encode("utf-8")
    size = ffi.new("size_t *", 0)
    check(lib.runlane_conf_get(conf, bkey, ffi.NULL, size))
    buf = ffi.new("char[]", size[0])
    check(lib.runlane_conf_get(conf, bkey, buf, size))
    shown: str = ffi.string(buf).decode("utf-8")
    return shown


def shown_store(values: Mapping[str, str]) -> str:
    """The store URL of ``values`` for logs and reprs, with its password
    masked by the core (the one masking implementation, the same place the
    Redis store reads the password from)."""
    conf = build_conf({"store": values["store"]} if "store" in values else {})
    return conf_get(conf, "store")


def dump_conf(conf: Any) -> Dict[str, str]:
    """The conf's keys and values (secrets masked) as the core reports them."""
    out = ffi.new("char **")
    check(lib.runlane_conf_dump(out, conf))
    try:
        result: Dict[str, str] = json.loads(ffi.string(out[0]).decode("utf-8"))
        return result
    finally:
        lib.runlane_free(out[0])
