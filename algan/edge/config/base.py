"""What every config section shares: the frozen, extra-forbidding pydantic base and the topic-safe name rules
(device id, camera names and topic prefixes become MQTT topic levels)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

#: Names used inside MQTT topics (device id, camera names): no ``/``, ``+``, ``#``, spaces or control characters.
#: Used with ``fullmatch`` (``$`` alone would accept a trailing newline, which the broker refuses).
TOPIC_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Topic prefix: one or more topic-safe levels separated by ``/`` (``fullmatch``).
TOPIC_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*")
#: Control characters (C0, DEL, C1): MQTT brokers close the connection on a topic or client id holding one.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def topic_name(value: str, what: str) -> str:
    if not TOPIC_NAME_RE.fullmatch(value):
        msg = (
            f"{what} {value!r} is not topic-safe; use 1-64 characters from A-Z a-z 0-9 _ . - "
            "starting with a letter or digit (no spaces, '/', '+' or '#')"
        )
        raise ValueError(msg)
    return value


def no_control(value: str, what: str) -> str:
    """``value`` unchanged when it holds no control character (newline, tab, NUL...), else ``ValueError``."""
    m = CONTROL_RE.search(value)
    if m is not None:
        raise ValueError(f"{what} {value!r} holds a control character (U+{ord(m.group()):04X}); remove it (a "
                         "trailing newline often comes from a file or an environment variable)")
    return value
