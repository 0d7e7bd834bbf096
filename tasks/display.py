"""The text a person sees on the push, built by the server from the typed action.

Agent-supplied text never drives it; context from the agent is shown only as a clearly
labelled, length-limited note with control and bidirectional-override characters removed.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from tasks.binding import short_code
from tasks.registry import ActionSpec

MAX_LINE = 80
MAX_NOTE = 120
MAX_SUMMARY = 480


def clean_text(text: str, *, limit: int) -> str:
    """Drop control, format (bidi overrides, zero-width) and other invisible characters; cut to ``limit``."""
    # Whitespace (newlines included) becomes a space; every other control or format character goes.
    kept = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C")
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def summary(
    *, spec: ActionSpec, params: dict[str, Any], agent: str, user: str, payload_hash: str, context: dict[str, Any]
) -> str:
    """The push text: action, key params, agent, a short code of the payload hash, labelled agent note."""
    typed = spec.params_model.model_validate(params)
    lines = [f"Approve {spec.name} for {user}?"]
    lines += [clean_text(line, limit=MAX_LINE) for line in spec.summary(typed)]
    lines.append(f"Requested by agent: {clean_text(agent, limit=MAX_LINE)}")
    lines.append(f"Code: {short_code(payload_hash)}")
    note = context.get("note") or context.get("reason")
    if isinstance(note, str) and note.strip():
        lines.append(f"Agent's note (unverified): {clean_text(note, limit=MAX_NOTE)}")
    return "\n".join(lines)[:MAX_SUMMARY]
