"""Every view is a link: page inputs live in the URL through Streamlit's `bind="query-params"` (the widget key
is the query parameter's name), and what a link brings is checked first, through the engine's own checks
(core.validation, the attacks' parameter specs), before any widget reads it.

A value that fails (unknown name, wrong type, out of range, too long, markup, a path) is removed from the
URL, the widget falls back to its default, and the page shows one notice naming the settings it reset.
Values are only ever compared with known options or parsed as numbers: nothing is read from a path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException
from streamlit.runtime.state.session_state_proxy import get_session_state

from core import IntriguingError
from core.attacks import ATTACKS, Param
from core.validation import check_int

Check = Callable[[str], Any]  # raises IntriguingError or ValueError when a link's value is unusable
BIND: dict[str, Any] = {"bind": "query-params", "persist_state": "session"}  # every bound widget's options
MAX_LENGTH = 200  # longer values are refused unread
STREAMLIT_OWN = ("embed", "embed_options")  # Streamlit's query parameters, never ours to check


def bound(key: str) -> dict[str, Any]:
    """Keyword arguments that bind a widget to the query parameter `key` and keep it across page switches."""
    return {"key": key, **BIND}


def choice(options: Iterable[Any], format_func: Callable[[Any], str] = str) -> Check:
    """A selectbox or radio value: the link holds the option as the widget shows it."""
    shown = {format_func(option) for option in options}

    def check(text: str) -> str:
        if text not in shown:
            raise ValueError("not one of the choices")
        return text

    return check


def integer(low: int, high: int | None) -> Check:
    return lambda text: check_int("value", _parse(text, int), low=low, high=high)


def _is_whole(text: str) -> bool:
    try:
        return float(text).is_integer()
    except ValueError:
        return False


def _parse(text: str, kind: type) -> Any:
    """A link's text as the parameter's type; ValueError when it is not one."""
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise ValueError("not true or false")
        return lowered == "true"
    if kind is str:
        return text
    if kind is int:
        if not _is_whole(text):
            raise ValueError("not a whole number")
        return int(float(text))
    return float(text)


def parameter(p: Param, norm: str | None = None) -> Check:
    """An attack parameter, checked by its spec (type, bounds, choices)."""
    return lambda text: p.check(_parse(text, p.kind), norm)


def attack_parameter_checks(prefix: str, datasets: Sequence[str]) -> dict[str, Check]:
    """Checks for every attack-parameter widget key `{prefix}_{dataset}_{attack}_{param}` (seeds excluded:
    the pages have their own seed input)."""
    return {
        param_key(prefix, dataset, name, p.name): parameter(p)
        for dataset in datasets
        for name, cls in ATTACKS.items()
        for p in cls.PARAMS
        if not p.seed
    }


def param_key(prefix: str, dataset: str, attack: str, param: str) -> str:
    """The widget key (and query parameter) of one attack parameter on one input domain."""
    return f"{prefix}_{dataset}_{attack}_{param}"


def _forget(key: str) -> None:
    """Remove a refused value from the URL and from the snapshot Streamlit seeds bound widgets from (its
    own parser would still read it there, and fails on e.g. an integer widget given 'inf'; private
    attribute of Streamlit 1.67, hence the getattr)."""
    try:
        del st.query_params[key]
    except StreamlitAPIException:  # bound to a widget drawn earlier in this session: the widget rules
        return
    with get_session_state().query_params() as params:
        getattr(params, "_initial_query_params", {}).pop(key, None)


def accept_link(checks: Mapping[str, Check]) -> list[str]:
    """Check this page's query parameters before its widgets read them: drop unknown and unusable ones and
    show one notice. Returns the names of the settings reset (unknown names are counted, not echoed)."""
    reset, unknown = [], 0
    for key in list(st.query_params):
        if key.lower() in STREAMLIT_OWN:
            continue
        check = checks.get(key)
        value = st.query_params.get(key, "")
        try:
            if check is None:
                unknown += 1
                raise ValueError("unknown")
            if len(value) > MAX_LENGTH:
                raise ValueError("too long")
            check(value)
        except (IntriguingError, ValueError, TypeError, OverflowError):
            if check is not None:
                reset.append(key)
            _forget(key)
    if reset or unknown:
        parts = [f"`{key}`" for key in reset]
        if unknown:
            parts.append(f"{unknown} unknown setting{'s' if unknown > 1 else ''}")
        st.warning(
            f"This link held values the page cannot use ({', '.join(parts)}); they were replaced by the "
            "defaults.",
            icon=":material/link_off:",
        )
    return reset
