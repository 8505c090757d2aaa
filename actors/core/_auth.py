"""Bearer tokens: loading the tokens file, reading the header, finding the user.

Pure functions (no sockets): ``_server.py`` calls them while it authenticates
a connection. A tokens file is a JSON object ``{"token": "user_id"}``; the
same JSON may come from the ``TASKACTORS_TOKENS`` environment variable.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping, Sequence
from typing import Final

from ._errors import ActorsError

#: Environment variable holding the tokens JSON when no tokens file is given.
TOKENS_ENV: Final = "TASKACTORS_TOKENS"


class TokensError(ActorsError, ValueError):
    """The tokens file (or ``TASKACTORS_TOKENS``) is not a JSON object of token -> user id."""


def load_tokens(
    path: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None
) -> dict[str, str] | None:
    """The bearer tokens of the server: a JSON object ``{"token": "user_id"}``.

    Read from the file at ``path`` when given, else from the environment
    variable ``TASKACTORS_TOKENS`` (the same JSON) when it is set and not
    empty. None means neither: the server then serves a single local user.

    Args:
        path: a tokens file, or None.
        environ: the environment to read (default: ``os.environ``).

    Raises:
        TokensError: the JSON is malformed, not an object, or has an empty or
            non-string token or user id.
        OSError: the file cannot be read.
    """
    if path is not None:
        with open(path, encoding="utf-8") as file:
            text, source = file.read(), f"tokens file {os.fspath(path)}"
    else:
        text = (os.environ if environ is None else environ).get(TOKENS_ENV, "")
        source = TOKENS_ENV
        if not text.strip():
            return None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise TokensError(f"{source}: malformed JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise TokensError(f'{source}: expected a JSON object {{"token": "user_id"}}')
    for token, user_id in raw.items():
        if not token or not isinstance(user_id, str) or not user_id:
            raise TokensError(f"{source}: every token and user id must be a non-empty string")
    return dict(raw)


def describe_auth(tokens: Mapping[str, str] | None) -> str:
    """One line saying whom a server with these tokens serves (for a start-up message)."""
    if tokens is None:
        return "no tokens: serving a single local user (no token needed, every task visible)"
    users = len(set(tokens.values()))
    return f"bearer tokens: {len(tokens)} token(s) for {users} user(s)"


def bearer_token(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer`` header; "" if the header is malformed."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def user_for_token(tokens: Mapping[str, str], token: str) -> str | None:
    """The user of a token (compared in constant time), or None."""
    found = None
    given = token.encode("utf-8", "surrogatepass")
    for known, user_id in tokens.items():
        if hmac.compare_digest(known.encode("utf-8", "surrogatepass"), given):
            found = user_id
    return found
