"""nnU-Net's prints (device notices, citation banner, every training log line) as log records, not lost.

nnU-Net writes to stdout with ``print``; where our code calls it, those lines would mix into our tables and
progress. :func:`prints_as_log` runs a block with stdout captured and hands every captured line to a logger
(DEBUG by default: shown with ``-v`` / ``logging.DEBUG``), so a warning nnU-Net prints is still there for whoever
asks for it. Only the block's own prints are taken; stderr (tqdm, Python warnings) is left alone.
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Iterator


@contextlib.contextmanager
def prints_as_log(logger: logging.Logger, level: int = logging.DEBUG, prefix: str = "nnU-Net: ") -> Iterator[None]:
    """Capture stdout inside the block; afterwards (also on an error) log each non-empty line at ``level``.

    Example:
        >>> import logging
        >>> records = []
        >>> log = logging.getLogger("doc"); log.setLevel(logging.DEBUG)
        >>> log.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})())
        >>> with prints_as_log(log):
        ...     print("a banner"); print(); print("a warning")
        >>> records
        ['nnU-Net: a banner', 'nnU-Net: a warning']
    """
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        for line in buf.getvalue().splitlines():
            if line.strip():
                logger.log(level, "%s%s", prefix, line)
