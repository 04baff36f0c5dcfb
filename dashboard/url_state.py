"""Every view is a link: page inputs live in the URL through Streamlit's `bind="query-params"` (the widget key
is the query parameter's name), and what a link brings is checked first, through the engine's own checks
(core.checks, the attacks' parameter specs), before any widget reads it.

A value that fails (unknown name, wrong type, out of range, too long, markup, a path) is removed from the
URL, the widget falls back to its default, and the page shows one notice naming the settings it reset.
Values are only ever compared with known options or parsed as numbers: nothing is read from a path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException
from streamlit.runtime.state.session_state_proxy import get_session_state

from core import IntriguingError
from core.attacks import ATTACKS, Param
from core.checks import check_int

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


def several(options: Iterable[str]) -> Check:
    """One value of a multiselect (the key repeats, one value each); empty is an empty selection."""
    pick = choice(options)
    return lambda text: text if text == "" else pick(text)


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


def param_widget(p: Param, default: Any, key: str, norm: str | None = None, disabled: bool = False) -> Any:
    """One widget for one spec'd parameter, bound to the URL: its label, help and bounds come from the
    engine's spec."""
    common = dict(help=p.help, disabled=disabled, **bound(key))
    if p.kind is bool:
        return st.checkbox(p.label, value=bool(default), **common)
    if p.kind is str:
        return st.selectbox(p.label, p.choices, index=p.choices.index(default), **common)
    high = p.upper(norm)
    if p.kind is int:
        return st.number_input(
            p.label, min_value=int(p.low or 0), max_value=None if high is None else int(high),
            value=default, step=int(p.step or 1), **common,
        )  # fmt: skip
    low = float(p.low) if p.low is not None else None
    fmt = "%.4g" if p.step is None else "%.4f"
    value = None if default is None else float(default)
    return st.number_input(
        p.label, min_value=low, max_value=high, value=value, step=p.step, format=fmt, **common
    )


def spec_checks(prefix: str, spec: Iterable[Param]) -> dict[str, Check]:
    """Checks for the widgets `param_widget` draws for a spec, keys `{prefix}_{name}`."""
    return {f"{prefix}_{p.name}": parameter(p) for p in spec}


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


@dataclass
class LinkNotice:
    """The one notice of a page's link: checks made as the page learns what a value may be (a unit index
    needs the layer's width) add to the notice the first checks drew at the top of the page."""

    slot: Any
    reset: list[str] = field(default_factory=list)
    unknown: int = 0

    def judge(self, key: str, check: Check | None) -> None:
        """Keep the query parameter `key` when every value it holds passes `check`; forget it otherwise."""
        try:
            if check is None:
                self.unknown += 1
                raise ValueError("unknown")
            for value in st.query_params.get_all(key):  # a multiselect's values repeat the key
                if len(value) > MAX_LENGTH:
                    raise ValueError("too long")
                check(value)
        except (IntriguingError, ValueError, TypeError, OverflowError):
            if check is not None:
                self.reset.append(key)
            _forget(key)

    def check_later(self, key: str, check: Check) -> None:
        """Check `key` (left out of `accept_link`'s first pass) now that the page can say what it may be."""
        if key in st.query_params:
            self.judge(key, check)
            self.show()

    def show(self) -> None:
        if not (self.reset or self.unknown):
            return
        parts = [f"`{key}`" for key in self.reset]
        if self.unknown:
            parts.append(f"{self.unknown} unknown setting{'s' if self.unknown > 1 else ''}")
        self.slot.warning(
            f"This link held values the page cannot use ({', '.join(parts)}); they were replaced by the "
            "defaults.",
            icon=":material/link_off:",
        )


REPLAY = "1"  # the value of a page's `{prefix}_replay` query parameter: this link names a run


def replay_key(prefix: str) -> str:
    return f"{prefix}_replay"


def replay_check(prefix: str) -> dict[str, Check]:
    """The link check of a page's replay flag (for `accept_link`)."""
    return {replay_key(prefix): choice([REPLAY])}


def replay_link(prefix: str) -> dict[str, str]:
    """The query parameter that makes a link to the page replay its run (the tour's links hold it)."""
    return {replay_key(prefix): REPLAY}


def name_the_run(prefix: str) -> None:
    """After Run: the URL a user copies names the run (its inputs are bound widgets already), so opening
    it replays the run, recomputed from the same inputs and seed."""
    st.query_params[replay_key(prefix)] = REPLAY


def inputs(prefix: str) -> dict[str, str]:
    """The page's inputs as its URL holds them, without the replay flag (a page switch drops that flag)."""
    return {k: v for k, v in st.query_params.to_dict().items() if k != replay_key(prefix)}


def forget_the_run(prefix: str) -> None:
    """The inputs changed since the run shown: the URL no longer names it."""
    if replay_key(prefix) in st.query_params:
        del st.query_params[replay_key(prefix)]


def replay_requested(prefix: str) -> bool:
    """True once per session opened from a link that names a run: the page runs it without Run pressed."""
    seen = f"_{replay_key(prefix)}_done"
    if st.query_params.get(replay_key(prefix)) != REPLAY or st.session_state.get(seen):
        return False
    st.session_state[seen] = True
    return True


def accept_link(checks: Mapping[str, Check], later: Iterable[str] = ()) -> LinkNotice:
    """Check this page's query parameters before its widgets read them: drop unknown and unusable ones and
    show one notice naming the settings reset (unknown names are counted, not echoed). The keys in `later`
    are left for `LinkNotice.check_later`."""
    notice = LinkNotice(st.empty())
    deferred = set(later)
    for key in list(st.query_params):
        if key.lower() in STREAMLIT_OWN or key in deferred:
            continue
        notice.judge(key, checks.get(key))
    notice.show()
    return notice
