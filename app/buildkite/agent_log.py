"""The log a failed job shows in Buildkite, and its split into gzip chunks (pure).

Input: the failure message from the lifecycle stage (one sentence plus maybe a table). Output: the
log bytes (a ``+++`` header so Buildkite shows the section expanded, then the message, cut to
``MAX_LOG_BYTES``) and the ``(offset, data, gzipped)`` chunks the agent API's ``chunks`` endpoint takes.
"""

from __future__ import annotations

import gzip

# Plenty for a reason and a table of pod events; a job log is for people, not a dump of manifests.
MAX_LOG_BYTES = 64 * 1024
# The agent's own default chunk size; the acquire response may ask for smaller.
DEFAULT_CHUNK_BYTES = 100 * 1024
HEADER = "+++ :kubernetes: buildkite-controller could not run this job\n"


def failure_log(message: str, *, max_bytes: int = MAX_LOG_BYTES) -> bytes:
    """The job log for ``message``: a header, the message, a final newline; cut to ``max_bytes``."""
    body = message.encode("utf-8", "replace").replace(b"\r\n", b"\n")
    text = HEADER.encode() + body + (b"" if body.endswith(b"\n") else b"\n")
    if len(text) <= max_bytes:
        return text
    note = f"\n… (message truncated: showing {{}} of {len(body)} bytes)\n"
    room = max_bytes - len(HEADER.encode()) - len(note.format(len(body)).encode())
    kept = body[: max(room, 0)].decode("utf-8", "ignore").encode()  # never split a character
    return HEADER.encode() + kept + note.format(len(kept)).encode()


def split_chunks(text: bytes, limit: int | None = None) -> list[tuple[int, bytes, bytes]]:
    """``(offset, data, gzip(data))`` for consecutive pieces of ``text`` of at most ``limit`` bytes."""
    size = max(1, limit or DEFAULT_CHUNK_BYTES)
    pieces = [text[offset : offset + size] for offset in range(0, len(text), size)] or [b""]
    # mtime=0 keeps the bytes reproducible, so a retried upload sends the same chunk.
    return [(index * size, piece, gzip.compress(piece, mtime=0)) for index, piece in enumerate(pieces)]
