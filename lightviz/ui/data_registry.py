"""Evaluation data uploaded while the app runs, shared by this server's sessions by content.

A shareable link names uploaded data as 'upload:<file name>#<digest>', the digest covering the
file's bytes and the options it was loaded with. Another session of the same server that opens
the link gets the same data; a server that never saw the file (or restarted) says so and what
to do. Bounded in bytes: the oldest uploads are forgotten first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from lightviz.core.evaldata import EvalData

PREFIX = "upload:"
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
    with _lock:
        _data[token] = data
        _data.move_to_end(token)
        while len(_data) > 1 and sum(_bytes(d) for d in _data.values()) > LIMIT_BYTES:
            _data.popitem(last=False)


def get(token: str) -> EvalData | None:
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
