"""Loading: YAML + ``key.sub=value`` overrides -> a stage's dataclass, strictly.

An unknown key, a key given twice, a wrong type or a value a section's ``check()`` refuses is a
:class:`ConfigError` naming the key, the file and the line (or the override), and, for a typo, the closest valid
key. Also the way back (:func:`to_dict`, :func:`dump_yaml`) and the key reference (:func:`describe`,
:func:`field_docs`) of ``rlhf config``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import os
import textwrap
import types
import typing
from typing import Any, Literal

import yaml

from rlhf.config.errors import ConfigError, FieldError


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docs of a dataclass's fields: the string literal right under each field (inherited ones too)."""
    docs: dict[str, str] = {}
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            docs.update(field_docs(base))
            break
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return docs
    body = tree.body[0].body  # type: ignore[attr-defined]
    for prev, node in zip(body, body[1:]):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def _key_lines(text: str) -> dict[str, int]:
    """Map dotted key paths of a YAML mapping to their 1-based line numbers."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}{k.value}"
                lines[key] = k.start_mark.line + 1
                walk(v, key + ".")

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, "")
    return lines


def _duplicate_key(text: str, name: str) -> None:
    """Strict loading: a key given twice in one mapping is a ConfigError (YAML itself lets the last one win)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return  # reported by the load that follows

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                    line = k.start_mark.line + 1
                    if k.value in seen:
                        raise ConfigError(f"{name}:{line}: duplicate key '{prefix}{k.value}' (first at line "
                                          f"{seen[k.value]}); keep one of them", key=f"{prefix}{k.value}")
                    seen[k.value] = line
                walk(v, f"{prefix}{k.value}.")
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, f"{prefix.rstrip('.')}[{i}].")

    if root is not None:
        walk(root, "")


class _Source:
    """Where values came from, for error messages."""

    def __init__(self, path: str, lines: dict[str, int], override_keys: set[str]):
        self.path, self.lines, self.override_keys = path, lines, override_keys

    def where(self, key: str) -> str:
        if key in self.override_keys:
            return f"command-line override '{key}'"
        line = self.lines.get(key)
        # fall back to the closest enclosing key that has a line
        parent = key
        while line is None and "." in parent:
            parent = parent.rsplit(".", 1)[0]
            line = self.lines.get(parent)
        return f"{self.path}:{line}" if line else self.path


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return repr(tp).replace("typing.", "")
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, src: _Source) -> Any:
    """Check/convert ``value`` to type ``tp``; raise ConfigError naming key and place."""
    origin = typing.get_origin(tp)

    def bad(extra: str = "") -> ConfigError:
        msg = f"{src.where(key)}: key '{key}' expects {_type_name(tp)}, got {value!r} ({type(value).__name__})"
        return ConfigError(msg + extra, key=key)

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad(" (a mapping of its fields)")
        return _build(tp, value, key + ".", src)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise bad(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, src)
            except ConfigError:
                continue
        raise bad()
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and item_tp is str:
            value = [value] if value != "" else []
        if not isinstance(value, (list, tuple)):
            raise bad()
        return [_coerce(v, item_tp, f"{key}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad()
        return {_coerce(k, k_tp, key, src): _coerce(v, v_tp, f"{key}.{k}", src) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad()
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads '1e-5' as a string
            try:
                number = float(value)
            except ValueError:
                raise bad() from None
        if number is None:
            raise bad()
        if not math.isfinite(number):  # .nan / .inf in YAML, nan / inf on the command line
            raise bad(" (a finite number: nan and inf are not allowed)")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        raise bad()
    raise bad()


def _build(cls: type, data: dict, prefix: str, src: _Source) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            valid = ", ".join(names)
            raise ConfigError(f"{src.where(key)}: unknown key '{key}'{hint}; valid keys here: {valid}", key=key)
        kwargs[k] = _coerce(v, hints[k], key, src)
    for k in names:  # sections left out of the file still get their defaults validated
        if k not in kwargs and dataclasses.is_dataclass(hints[k]):
            kwargs[k] = _build(hints[k], {}, f"{prefix}{k}.", src)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except FieldError as e:  # names its field
            key = f"{prefix}{e.field}"
            raise ConfigError(f"{src.where(key)}: key '{key}': {e.reason}", key=key) from None
        except ValueError as e:  # about the section as a whole
            key = prefix.rstrip(".")
            raise ConfigError(f"{src.where(key)}: key '{key}': {e}", key=key) from None
    return obj


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", parsed value); the value is read as YAML (numbers, bools, lists)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def load_config(cls: type, path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Load ``path`` (YAML) into dataclass ``cls``, apply ``overrides``, validate, and return it."""
    text, data, name = "", {}, "<defaults>"
    if path is not None:
        name = str(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"{name}: cannot read config: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{name}: cannot read config: not UTF-8 text (byte {e.start + 1})") from None
        _duplicate_key(text, name)
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{name}:{mark.line + 1}" if mark else name
            raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: the top level must be a mapping of sections")
        # A stage's saved OUT/config.yaml can be passed back as a config: its `derived` section (world size,
        # batch arithmetic, parameter counts) is output, recomputed on every run, so it is not read.
        if "derived" in data and "derived" not in {f.name for f in dataclasses.fields(cls)}:
            data.pop("derived")
    keys: set[str] = set()
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
        keys.add(key)
    return _build(cls, data, "", _Source(name, _key_lines(text), keys))


def load_section(cls: type, data: Any, key: str, name: str = "<section>") -> Any:
    """Validate one section on its own (e.g. the ``deepspeed`` mapping of a configs/deepspeed overlay) into
    dataclass ``cls`` as if it stood under ``key``; errors name ``name`` as the file."""
    return _coerce(data, cls, key, _Source(name, {}, set()))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any, extra: dict | None = None) -> str:
    """The resolved config as YAML (what every stage saves beside its output)."""
    data = to_dict(cfg)
    if extra:
        data = {**data, **extra}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def describe(cls: type, prefix: str = "", instance: Any = None) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) for every field, recursively: the reference for ``rlhf config``.

    Defaults come from a default instance, so a stage that overrides a section's defaults shows its own.
    """
    rows = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    instance = instance if instance is not None else cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, f"{prefix}{f.name}.", value)
            continue
        rows.append((prefix + f.name, _type_name(tp), value, docs.get(f.name, "")))
    return rows
