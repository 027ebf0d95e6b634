"""Evaluation data uploaded while the app runs, by content, private to the sessions that uploaded it.

A shareable link names uploaded data as 'upload:<file name>#<digest>', the digest covering the
file's bytes and the options it was loaded with. The session that uploaded it (or uploads the
same file again) gets it back from the link; any other session is told that the link used an
upload it does not hold and what to do, so nobody opens another person's data by its URL.
Bounded in bytes: the oldest uploads are forgotten first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import streamlit as st

from lightviz.core.evaldata import EvalData

PREFIX = "upload:"
SESSION_KEY = "session_data_tokens"  # st.session_state key: the tokens this session uploaded
LIMIT_BYTES = 2 * 2**30
_data: OrderedDict[str, EvalData] = OrderedDict()
_lock = threading.Lock()


def token_for(file_name: str, content: bytes, options: tuple) -> str:
    """'upload:digits.npz#1a2b3c4d5e6f' for a file's bytes and the options it was read with.

    >>> token_for("a.npz", b"x", ()) == token_for("a.npz", b"x", ()) != token_for("a.npz", b"x", (1,))
    True
    """
    digest = hashlib.sha256(content)
    digest.update(repr(options).encode())
    return f"{PREFIX}{file_name}#{digest.hexdigest()[:12]}"


def register(token: str, data: EvalData) -> None:
    """Keep `data` under `token`, visible to the current session (only)."""
    tokens = st.session_state.setdefault(SESSION_KEY, [])
    if token not in tokens:
        tokens.append(token)
    with _lock:
        _data[token] = data
        _data.move_to_end(token)
        while len(_data) > 1 and sum(_bytes(d) for d in _data.values()) > LIMIT_BYTES:
            _data.popitem(last=False)


def get(token: str) -> EvalData | None:
    """The data uploaded under `token` when this session uploaded it, else None."""
    if token not in st.session_state.get(SESSION_KEY, []):
        return None
    with _lock:
        return _data.get(token)


def file_name(token: str) -> str:
    """The uploaded file's name a token holds ('digits.npz').

    >>> file_name("upload:digits.npz#1a2b3c4d5e6f")
    'digits.npz'
    """
    return token[len(PREFIX):].rpartition("#")[0] if token.startswith(PREFIX) else token


def _bytes(data: EvalData) -> int:
    return data.x.numel() * data.x.element_size() + (0 if data.y is None else data.y.numel() * 8)
