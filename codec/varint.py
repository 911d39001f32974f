"""Varints (unsigned LEB128, and zigzag for signed values) and a bounds-checked byte reader."""
from __future__ import annotations

import numpy as np

from .errors import TNGError


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def zigzag_varints(values: np.ndarray) -> bytes:
    return b"".join(uvarint((v << 1) ^ (v >> 63)) for v in values.tolist())


class Reader:
    """Reads a byte string front to back; running off the end is a TNGError naming the field."""

    def __init__(self, data: bytes | memoryview):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise TNGError(f"truncated file: ends inside the {what}")
        b = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return b

    def uvarint(self, what: str) -> int:
        n = 0
        for shift in range(0, 35, 7):
            b = self.take(1, what)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
        raise TNGError(f"corrupt file: bad {what}")

    def zigzag_varints(self, count: int, what: str) -> np.ndarray:
        out = np.empty(count, np.int64)
        for i in range(count):
            n = self.uvarint(what)
            out[i] = (n >> 1) ^ -(n & 1)
        return out

    def at_end(self) -> bool:
        return self.pos == len(self.data)
