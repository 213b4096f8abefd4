"""Declared selector settings: name, rule (conversion + valid range), default, help.

A selector class lists its settings once (``Selector.settings``); the constructor,
``get_params`` / ``set_params``, the ``method[key=value]`` syntax and the label all
read that declaration.  A rule converts a value and raises :class:`ValueError` when
it is out of range; :meth:`Setting.convert` turns that into an :class:`InputError`
that names the method, the setting and the valid range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lensllm.errors import InputError


@dataclass(frozen=True)
class Rule:
    """How a setting's value is converted; ``describe`` completes "must be ..."."""

    describe: str
    convert: Callable[[Any], Any]


def _real(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError
    value = float(value)
    if not math.isfinite(value):
        raise ValueError
    return value


def whole(minimum: int) -> Rule:
    """A whole number >= ``minimum`` (an integral float such as 4.0 is accepted)."""

    def convert(value: Any) -> int:
        number = _real(value)
        if number != int(number) or number < minimum:
            raise ValueError
        return int(number)

    return Rule(f"a whole number >= {minimum}", convert)


def number(*, above: float | None = None, at_least: float | None = None) -> Rule:
    """A finite number > ``above`` or >= ``at_least``."""
    bound = f"> {above:g}" if above is not None else f">= {at_least:g}"

    def convert(value: Any) -> float:
        x = _real(value)
        if (above is not None and not x > above) or (at_least is not None and x < at_least):
            raise ValueError
        return x

    return Rule(f"a number {bound}", convert)


def choice(*options: str) -> Rule:
    """One of ``options`` (strings)."""

    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError
        return value

    return Rule(f"one of {', '.join(options)}", convert)


def numbers(item: Rule) -> Rule:
    """One value or a non-empty tuple of values, each following ``item``; a tuple."""

    def convert(value: Any) -> tuple:
        values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if not values:
            raise ValueError
        return tuple(item.convert(v) for v in values)

    return Rule(f"{item.describe.replace('a number', 'numbers')}, one or several as "
                "(a,b,...)", convert)


def interval(*, above: float | None = None) -> Rule:
    """Two numbers (lo, hi) with lo < hi (and lo > ``above`` when given)."""
    low = f"{above:g} < " if above is not None else ""

    def convert(value: Any) -> tuple[float, float]:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError
        lo, hi = _real(value[0]), _real(value[1])
        if not lo < hi or (above is not None and not lo > above):
            raise ValueError
        return lo, hi

    return Rule(f"two numbers (lo,hi) with {low}lo < hi", convert)


@dataclass(frozen=True)
class Setting:
    """One declared setting of a selector."""

    name: str
    rule: Rule
    default: Any
    help: str

    def convert(self, value: Any, where: str) -> Any:
        """``value`` converted by the rule; InputError naming ``where`` and the range."""
        try:
            return self.rule.convert(value)
        except (ValueError, TypeError):
            raise InputError(f"{where}: {self.name} must be {self.rule.describe}, got "
                             f"{format_value(value) if _plain(value) else repr(value)}"
                             ) from None


def _plain(value: Any) -> bool:
    """Numbers (and tuples of them) print as written in a spec; other values use repr."""
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def setting(default: Any, rule: Rule, help: str) -> Any:
    """A dataclass field that declares a setting (see :func:`declared_in`)."""
    return dataclasses.field(default=default,
                             metadata={"setting": Setting("", rule, default, help)})


def declared_in(cls: type) -> tuple[Setting, ...]:
    """The settings a dataclass declares with :func:`setting`, named after its fields."""
    return tuple(dataclasses.replace(f.metadata["setting"], name=f.name)
                 for f in dataclasses.fields(cls) if "setting" in f.metadata)


def validate_dataclass(obj: Any, where: str) -> None:
    """Convert every declared field of a frozen dataclass in place (in ``__post_init__``)."""
    for item in declared_in(type(obj)):
        object.__setattr__(obj, item.name, item.convert(getattr(obj, item.name), where))


def format_value(value: Any) -> str:
    """A value as written in ``method[key=value]``: 2.0 as 2, tuples as (a,b), a
    one-value tuple as its value."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        return format_value(value[0])
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(format_value(v) for v in value) + ")"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_value(text: str) -> Any:
    """A value written in ``method[key=value]``: a number, a string or ``(a,b,...)``."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        return tuple(parse_value(part) for part in split_outside(text[1:-1], "()")
                     if part.strip())
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def split_outside(text: str, brackets: str) -> list[str]:
    """Split ``text`` on the commas outside ``brackets`` (an open/close pair)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == brackets[0]
        depth -= ch == brackets[1]
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def check_names(settings: Sequence[Setting], given: Sequence[str], method: str) -> None:
    """InputError for names that are not settings, naming the valid ones."""
    known = [s.name for s in settings]
    unknown = [name for name in given if name not in known]
    if unknown:
        raise InputError(
            f"method {method!r} has no option {', '.join(sorted(unknown))}; "
            + (f"its options are {', '.join(known)}" if known else "it takes no options"))
