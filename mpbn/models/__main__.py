"""``python -m mpbn.models``: parameter counts of every registered model at default settings."""

from __future__ import annotations

from mpbn.models import count_parameters, create, list_models


def parameter_table() -> list[tuple[str, int, int, int]]:
    """``(name, without MPBN, with channel MPBN, with element MPBN)`` for every model."""
    rows = []
    for name in list_models():
        counts = [count_parameters(create(name, mpbn=m)) for m in ("none", "channel", "element")]
        rows.append((name, *counts))
    return rows


def main() -> None:
    header = ("model", "no MPBN", "channel MPBN", "element MPBN")
    print(f"| {header[0]:<16}| {header[1]:>12} | {header[2]:>14} | {header[3]:>14} |")
    print(f"|{'-' * 17}|{'-' * 14}:|{'-' * 16}:|{'-' * 16}:|")
    for name, plain, channel, element in parameter_table():
        print(f"| {name:<16}| {plain:>12,} | {channel:>14,} | {element:>14,} |")


if __name__ == "__main__":
    main()
