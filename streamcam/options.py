"""Run options, each defined once: a :class:`streamcam.RunConfig` field declared with :func:`option`.

The declaration holds the field's type and default and, in its metadata, all
that the rest of the code derives from it: the command line's flag, metavar,
parser, choices, help text and group (:func:`add_options`, :func:`parsed`), the
check that refuses a bad value (:func:`check_values`, run by ``RunConfig``), and
whether the value is an argument of :class:`streamcam.Explainer`
(:func:`explainer_arguments`, whose keyword names are the fields' names).

The range checks are plain functions (``check_top_k``...) so that the Explainer,
which takes some of the same values, refuses them with the same words. Nothing
here imports torch, nor anything slow: ``streamcam --help`` builds its parser
from these declarations.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable, Collection, Sequence
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, TypeVar

from .errors import InputError

T = TypeVar("T")
TAKES_VALUE: Any = object()  # Option.sets of a flag that takes a value (not a switch)


@dataclass(frozen=True)
class Option:
    """How one field is set on the command line, checked and handed on (see :func:`option`)."""

    flags: tuple[str, ...] = ()
    help: str | None = None  # None: not on the command line
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # argparse's ``type``: text -> value
    choices: tuple[str, ...] | None = None
    sets: Any = TAKES_VALUE  # a switch (a flag without a value) sets the field to this
    repeat: bool = False  # each use of the flag adds one value (the field is a tuple)
    group: str | None = None  # the --help section; None: the command's own options
    check: Callable[[Any], None] | None = None  # raises InputError for a bad value
    explainer: bool = False  # an argument of streamcam.Explainer, under the field's name
    const: Any = None  # not None: the flag may also come without a value, which then is this

    @property
    def on_command_line(self) -> bool:
        return self.help is not None


def option(default: T, *flags: str, help: str | None = None, metavar: str | None = None,
           parse: Callable[[str], Any] | None = None, choices: Sequence[str] | None = None, sets: Any = TAKES_VALUE,
           repeat: bool = False, group: str | None = None, check: Callable[[Any], None] | None = None,
           explainer: bool = False, const: Any = None) -> T:
    """A dataclass field with its ``default`` and what :class:`Option` says about it.

    ``flags`` as argparse takes them (``"-o", "--output"``); with ``help`` but no
    flags, the field is the command's positional arguments (any number). Without
    ``help`` the field is not on the command line. With ``const``, the flag's value
    is optional (``--serve`` alone means ``--serve 127.0.0.1:8080``).
    """
    spec = Option(flags, help=help, metavar=metavar, parse=parse, choices=tuple(choices) if choices else None,
                  sets=sets, repeat=repeat, group=group, check=check, explainer=explainer, const=const)
    return field(default=default, metadata={"option": spec})  # type: ignore[return-value]


def option_of(item: Field) -> Option | None:
    return item.metadata.get("option")


def declared(config: Any) -> list[tuple[Field, Option]]:
    """The fields of the dataclass (or instance) ``config`` declared with :func:`option`, in order."""
    return [(item, spec) for item in fields(config) if (spec := option_of(item)) is not None]


def check_values(config: Any) -> None:
    """Run every field's own check on its value (cross-field checks stay with the class)."""
    for item, spec in declared(config):
        if spec.check is not None:
            spec.check(getattr(config, item.name))


def explainer_arguments(config: Any) -> tuple[str, ...]:
    """The fields that are keyword arguments of :class:`streamcam.Explainer`, under the same names."""
    return tuple(item.name for item, spec in declared(config) if spec.explainer)


def add_options(parser: argparse.ArgumentParser, config: type, start: str | None = None,
                stop: str | None = None, skip: Collection[str] = ()) -> None:
    """Add ``config``'s command-line fields to ``parser``, in declaration order, each in its group.

    ``start`` and ``stop`` (field names, ``stop`` excluded) take a slice of them, so that an option the
    command alone has can stand between two of them; the fields named in ``skip`` are left out (another
    command taking some of ``config``'s options).
    """
    items = [(item, spec) for item, spec in declared(config) if spec.on_command_line and item.name not in skip]
    names = [item.name for item, _ in items]
    groups: dict[str | None, Any] = {None: parser}
    for item, spec in items[names.index(start) if start else 0:names.index(stop) if stop else len(items)]:
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(spec.group)
        _add(groups[spec.group], item, spec)


def add_option(parser: argparse.ArgumentParser, config: type, name: str, **overrides: Any) -> argparse.Action:
    """Add the field ``name`` of ``config`` to ``parser``; ``overrides`` replace parts of its
    :class:`Option` where another command says it otherwise (e.g. its own ``help``)."""
    item = next(item for item in fields(config) if item.name == name)
    return _add(parser, item, replace(option_of(item), **overrides))  # type: ignore[type-var]


def _add(parser: Any, item: Field, spec: Option) -> argparse.Action:
    """One argparse argument whose ``dest`` is the field's name and whose default is the field's."""
    if not spec.flags:
        return parser.add_argument(item.name, nargs="*", metavar=spec.metavar, default=item.default, help=spec.help)
    if spec.sets is not TAKES_VALUE:
        return parser.add_argument(*spec.flags, action="store_const", const=spec.sets, default=item.default,
                                   dest=item.name, help=spec.help)
    optional = {"nargs": "?", "const": spec.const} if spec.const is not None else {}
    return parser.add_argument(*spec.flags, action="append" if spec.repeat else "store", dest=item.name,
                               default=list(item.default) if spec.repeat else item.default, type=spec.parse,
                               choices=spec.choices, metavar=spec.metavar, help=spec.help, **optional)


def parsed(args: argparse.Namespace, config: type, skip: Collection[str] = ()) -> dict[str, Any]:
    """The values of ``config``'s command-line fields in ``args``, by field name (lists become tuples),
    but for those named in ``skip`` (as :func:`add_options` left them out)."""
    values = {item.name: getattr(args, item.name) for item, spec in declared(config)
              if spec.on_command_line and item.name not in skip}
    return {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}


# The range checks (the messages name the command-line flag: the Python API says the same).

def check_batch(value: int) -> None:
    if not 1 <= value <= 1024:
        raise InputError(f"--batch must be between 1 and 1024, not {value}")


def check_top_k(value: int) -> None:
    if value < 1:
        raise InputError(f"--top-k must be at least 1, not {value}")


def check_alpha(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InputError(f"--alpha must be between 0 and 1, not {value}")


def check_box_threshold(value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise InputError(f"--box-threshold is a fraction of the map's maximum, in (0, 1], not {value}")


def check_smooth(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise InputError(f"--smooth must be at least 0 and below 1, not {value}")


def check_webcams(indices: Sequence[int]) -> None:
    if any(index < 0 for index in indices):
        raise InputError(f"--webcam takes a camera index (0, 1, ...), not {min(indices)}")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6), or a bare ``PORT`` on loopback -> (host, port); port 0: any free one."""
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = "127.0.0.1", text
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"--serve takes HOST:PORT (e.g. 127.0.0.1:8080, 0.0.0.0:8080), not {text!r}")
    return host, int(port)


def check_serve(address: str | None) -> None:
    if address is not None:
        parse_address(address)
        if importlib.util.find_spec("aiohttp") is None:
            raise InputError("--serve needs aiohttp: pip install 'streamcam[serve]'")


def check_token(token: str | None) -> None:
    if token is not None and (len(token) < 8 or not token.isprintable() or " " in token):
        raise InputError("--token must be at least 8 printable characters without spaces")


def parse_bitrate(text: str) -> int:
    """``4M``, ``800k`` or ``2500000`` -> bits per second."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a bitrate (e.g. 4M, 800k)") from None
    if not 0 < value < 10**11:
        raise argparse.ArgumentTypeError(f"'{text}' is not a sensible bitrate")
    return int(value)
