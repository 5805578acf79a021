"""How chat messages become a prompt for our base language models (they were trained on plain text, not
dialogues), and back.

The template, one line per message, then the assistant's turn::

    System: {system or developer content}
    User: {content}
    Assistant: {content}
    ...
    Assistant:

The reply is what the model writes after ``Assistant:`` (leading spaces dropped), up to the first
``\\nUser:`` or ``\\nSystem:`` (stop sequences added to the request's own), so the model does not write
the user's next turn.
"""
from __future__ import annotations

from .schemas import ChatMessage

ROLE_LABELS = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
TURN_STOPS = ["\nUser:", "\nSystem:"]


def chat_prompt(messages: list[ChatMessage]) -> str:
    lines = [f"{ROLE_LABELS[m.role]}: {m.text()}" for m in messages]
    return "\n".join(lines + ["Assistant:"])


def chat_stops(stops: list[str]) -> list[str]:
    """The request's stop sequences, then the turn markers (deduplicated, order kept)."""
    return list(dict.fromkeys(stops + TURN_STOPS))
