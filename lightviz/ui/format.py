"""How numbers read on screen: one place, so tests can format the expected values the same way."""

from __future__ import annotations


def percent(value: float | None, digits: int = 2) -> str:
    """0.97556 -> '97.56%'; None -> 'n/a'."""
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def bytes_text(n: int | float) -> str:
    """Exact bytes with thousands separators: 24800 -> '24,800 B'."""
    return f"{int(n):,} B"


def human_bytes(n: int | float) -> str:
    """Bytes in binary units: 97152 -> '94.9 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"


def sentence_case(text: str) -> str:
    """First letter up, the rest as written ('TensorRT-style KL' stays, unlike str.capitalize).

    >>> sentence_case("tensorRT-style KL calibration")
    'TensorRT-style KL calibration'
    """
    return text[:1].upper() + text[1:]
