"""Reading a runyard HTML report in the tests: every element with its attributes and where it is
(its section, its metric chart), the scripts, and the text (html.parser, the standard library);
and the pixels of a browser's screenshot of it (zlib)."""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclasses.dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    section: str | None  # the id of the <section> it is in
    metric: str | None  # the data-metric of the <svg> it is in


class Page(HTMLParser):
    """A parsed report: ``elements`` in document order, ``scripts`` (their text), ``text`` (all
    text outside scripts and styles, joined), ``section_text`` (that text by section)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._text: list[str] = []
        self.section_text: dict[str | None, str] = {}  # section id -> its text
        self._stack: list[Element] = []
        self.feed(html)
        self.close()
        self.text = "".join(self._text)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]], push: bool) -> None:
        values = {k: v or "" for k, v in attrs}
        section = next((e.attrs.get("id") for e in reversed(self._stack) if e.tag == "section"), None)
        metric = next(
            (e.attrs["data-metric"] for e in reversed(self._stack) if "data-metric" in e.attrs), None
        )
        element = Element(tag, values, section, metric)
        self.elements.append(element)
        if push and tag not in VOID:
            self._stack.append(element)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, push=True)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, push=False)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].tag == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        inside = self._stack[-1].tag if self._stack else None
        if inside == "script":
            self.scripts.append(data)
        elif inside == "style":
            self.styles.append(data)
        else:
            self._text.append(data)
            section = next((e.attrs.get("id") for e in reversed(self._stack) if e.tag == "section"), None)
            self.section_text[section] = self.section_text.get(section, "") + data

    def find(self, tag: str | None = None, section: str | None = None, **attrs: object) -> list[Element]:
        """Elements with that tag (None: any) in that section (None: anywhere) having every
        attribute named (``data_task="x"``; the value ``...`` only asks that it is there)."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            e
            for e in self.elements
            if (tag is None or e.tag == tag)
            and (section is None or e.section == section)
            and all(k in e.attrs and (v is ... or e.attrs[k] == v) for k, v in wanted.items())
        ]


def polyline_points(points: str) -> list[tuple[float, float]]:
    """The coordinates of an SVG ``points`` attribute."""
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", points)]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the pixels (each ``bytes`` of its channels) of an 8-bit RGB or RGBA,
    non-interlaced PNG (what Chromium's --screenshot writes), decoded with zlib alone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG kind {depth=} {colour=}"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    previous = bytearray(stride)
    pixels: list[bytes] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b, c = previous[i], previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        pixels.extend(bytes(line[i : i + 3]) for i in range(0, stride, channels))
        previous = line
    return width, height, pixels
