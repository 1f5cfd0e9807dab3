"""The HTML toolkit of every page the project writes (the report, the search contact sheet).

Pages are self-contained: images travel inside as ``data:`` URIs, the style sheet is in the
page, nothing is fetched from a network, so a page opens from a laptop, an artefact store or
an e-mail attachment. Values are escaped here (``esc``) unless they are ``Markup``.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Card:
    """A key number on a page: label, value, what it is compared against, and a tone."""

    label: str
    value: str
    note: str = ""
    tone: str = ""  # "good", "bad", "neutral" or "" (the colour of its top border)


def data_uri(mime: str, data: bytes) -> str:
    """Bytes as a ``data:`` URI (the page carries its images inside)."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def png_data_uri(data: bytes) -> str:
    return data_uri("image/png", data)


def image_data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI."""
    return png_data_uri(path.read_bytes())


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a page: ``digits`` decimals for floats, n/a for missing or non-finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class Markup(str):
    """HTML already escaped (a cell that holds a mark-up snippet)."""


def cell(value: Any, digits: int = 3) -> str:
    """One table cell: numbers right-aligned (floats with ``digits`` decimals), ``Markup`` as is, the rest escaped."""
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, float):
        return f'<td class="num">{fmt(value, digits)}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    return '<td class="num">–</td>' if value is None else f"<td>{esc(value)}</td>"


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
               headers: Sequence[str] | None = None, row_classes: Sequence[str] | None = None,
               digits: int = 3) -> str:
    """Rows of dicts as an HTML table; floats with ``digits`` decimals, numbers right-aligned."""
    if not rows:
        return '<p class="what">(none)</p>'
    columns = list(columns or rows[0].keys())
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) or r.get(c) is None
                   for r in rows) for c in columns]
    head = "".join(f'<th class="num">{esc(h)}</th>' if n else f"<th>{esc(h)}</th>"
                   for h, n in zip(headers or columns, numeric))
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(cell(row.get(c), digits) for c in columns) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def image(path: Path, alt: str, css: str = "plot") -> str:
    """An inlined PNG file, or a note that it is missing."""
    if not path.is_file():
        return f'<p class="missing">missing plot {esc(path.name)}</p>'
    return f'<img class="{css}" src="{image_data_uri(path)}" alt="{esc(alt)}">'


def card_grid(cards: Iterable[Card]) -> str:
    """Cards side by side (nothing when there are none)."""
    items = "".join(
        f'<div class="card {c.tone}"><div class="label">{esc(c.label)}</div><div class="value">{esc(c.value)}</div>'
        f'<div class="note">{esc(c.note)}</div></div>'
        for c in cards
    )
    return f'<div class="cards">{items}</div>' if items else ""


def section(title: str, what: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2><p class="what">{what}</p>{body}</section>'


def missing(name: str, directory: Path | None) -> str:
    where = f" in <code>{esc(directory)}</code>" if directory else ""
    return f'<p class="missing">No {esc(name)} output{where}.</p>'


def tone(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or not math.isfinite(value) or not math.isfinite(reference):
        return "neutral"
    return "good" if value > reference else "bad"




def document(title: str, style: str, body: str) -> str:
    """A whole page: doctype, title, the style sheet inline, the body."""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{style}</style></head><body>{body}</body></html>")
