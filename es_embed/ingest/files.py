"""``es-embed ingest DIR``: a folder of .txt, .md, .html and .pdf files, one document each.

Every file is parsed before anything is written (the JSONL rule: validate, then write);
the parsed documents then go through the same ``Loader`` as JSONL lines.

- Walk: recursive, in sorted order of the relative path, skipping hidden files and
  folders (a leading dot) and not following symbolic links to folders. Other extensions
  are counted by extension, not read.
- ``_id`` is the relative path with ``/`` separators, so loading the folder again
  overwrites each file's document instead of adding a second one.
- Parsers: Markdown with ``markdown-it-py`` (CommonMark, plus tables): its token stream
  gives the text without markup and tells a heading from a line that merely starts with
  ``#`` (code, setext headings), which a regex would not. HTML with the standard library's
  ``html.parser`` (tolerant of broken markup, no dependency): scripts, styles, templates,
  SVG and ``<nav>`` are dropped, block elements become paragraph breaks. PDF with ``pypdf``
  (pure Python, maintained): the text of each page, pages separated by a blank line.
- Title: HTML ``<title>`` or else the first ``<h1>``; Markdown front matter ``title:`` or
  else the first level-1 heading; the PDF's metadata title; else the file name without its
  extension.
- A file that cannot be read or parsed, or has no text at all (a scanned PDF), is a
  ``Failure`` with its reason; the caller reports it and skips it, or stops (``--strict``).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

from es_embed.ingest.loader import Line

if TYPE_CHECKING:
    from markdown_it.token import Token

MARKDOWN = (".md", ".markdown")
HTML = (".html", ".htm")
SUFFIXES = (".txt", *MARKDOWN, *HTML, ".pdf")
MAX_ID_BYTES = 512  # Elasticsearch's limit on _id

# Elements whose text is not content. <head> holds <title>, which is read on its own.
HTML_SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "nav", "head"})
HTML_BLOCKS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 h3 "
    "h4 h5 h6 header hr li main ol p pre section table td th tr ul".split()
)
CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


class ParseError(Exception):
    """Why one file cannot be loaded; the message is the reason, the file is the caller's."""


@dataclass(frozen=True)
class ParsedFile:
    path: str  # relative to the folder, '/'-separated: the document's _id
    title: str
    text: str


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class FolderScan:
    files: list[ParsedFile] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    other: Counter[str] = field(default_factory=Counter)  # skipped extension -> count


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every visible file under root, sorted by relative path."""
    found: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                path = Path(folder, name)
                found.append((path.relative_to(root).as_posix(), path))
    return iter(sorted(found))


def scan_folder(root: Path) -> FolderScan:
    scan = FolderScan()
    for rel, path in walk(root):
        suffix = path.suffix.lower()
        if suffix not in SUFFIXES:
            scan.other[suffix or "(none)"] += 1
            continue
        try:
            if len(rel.encode()) > MAX_ID_BYTES:
                raise ParseError(f"path longer than {MAX_ID_BYTES} bytes (it is the _id)")
            title, text = parse_file(path)
        except ParseError as exc:
            scan.failures.append(Failure(rel, str(exc)))
            continue
        scan.files.append(ParsedFile(rel, title or path.stem, text))
    return scan


def parse_file(path: Path) -> tuple[str | None, str]:
    """(title or None, text) of one file; raises ParseError with the reason."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read: {exc.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        title, text = parse_pdf(data)
    elif suffix in HTML:
        title, text = parse_html(decode(data, declared_charset(data)))
    elif suffix in MARKDOWN:
        title, text = parse_markdown(decode(data))
    else:
        title, text = None, decode(data).strip()
    if not text:
        raise ParseError("no text to load" + (" (scanned pages?)" if suffix == ".pdf" else ""))
    return title, text


def decode(data: bytes, charset: str | None = None) -> str:
    """UTF-8 (a BOM is dropped) unless the file declares its charset."""
    encoding = charset or "utf-8-sig"
    try:
        return data.decode(encoding)
    except LookupError:
        raise ParseError(f"declares an unknown charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise ParseError(
            f"not {encoding.removesuffix('-sig').upper()} text "
            f"(byte 0x{byte:02x} at offset {exc.start})"
        ) from None


def declared_charset(data: bytes) -> str | None:
    """The charset an HTML page declares in its first 2 KB (a BOM wins, as in browsers)."""
    if data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-16"
    match = CHARSET.search(data[:2048])
    return match.group(1).decode("ascii").lower() if match else None


def _squash(text: str) -> str:
    return " ".join(text.split())


def _paragraphs(blocks: list[str]) -> str:
    return "\n\n".join(b for b in (_squash(b) for b in blocks) if b)


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.title = ""
        self.h1 = ""
        self._current: list[str] = []
        self._skipping = 0  # depth inside elements whose text is dropped
        self._in: str | None = None  # "title" or "h1" while reading one
        self._titled = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if (tag == "title" and not self._titled) or (tag == "h1" and not self.h1):
            self._in = tag  # the first of each: an <svg> may hold a <title> of its own
        if tag in HTML_SKIPPED:
            self._skipping += 1
        elif tag in HTML_BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._titled = self._titled or tag == "title"
            self._in = None
        if tag in HTML_SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in HTML_BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in == "title":
            self.title += data
            return
        if self._in == "h1":
            self.h1 += data
        if not self._skipping:
            self._current.append(data)

    def _flush(self) -> None:
        self.blocks.append("".join(self._current))
        self._current = []

    def result(self) -> tuple[str | None, str]:
        self.close()
        self._flush()
        return _squash(self.title) or _squash(self.h1) or None, _paragraphs(self.blocks)


def parse_html(markup: str) -> tuple[str | None, str]:
    parser = _HTMLText()
    parser.feed(markup)  # html.parser recovers from any markup; it raises on none
    return parser.result()


def parse_markdown(source: str) -> tuple[str | None, str]:
    from markdown_it import MarkdownIt

    title = None
    front = FRONT_MATTER.match(source)
    if front:  # YAML front matter (Jekyll, Hugo, MkDocs): not text; its title wins
        source = source[front.end() :]
        named = FRONT_TITLE.search(front.group(1))
        title = named.group(1).strip("\"'") if named else None
    blocks: list[str] = []
    heading = None
    for token in MarkdownIt("commonmark").enable("table").parse(source):
        if token.type == "heading_open":
            heading = token.tag
        elif token.type == "inline":
            text = "".join(_inline_text(token.children or []))
            if heading == "h1" and title is None:
                title = _squash(text)
            blocks.append(text)
            heading = None
        elif token.type in ("fence", "code_block"):
            blocks.append(token.content)
        elif token.type == "html_block":
            blocks.append(parse_html(token.content)[1])
    return title or None, _paragraphs(blocks)


def _inline_text(children: Sequence[Token]) -> Iterator[str]:
    for child in children:
        if child.type in ("text", "code_inline", "image"):  # an image's content is its alt
            yield child.content
        elif child.type in ("softbreak", "hardbreak"):
            yield " "


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """pypdf logs each repair it makes; the file's fate is reported once, by the caller."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def parse_pdf(data: bytes) -> tuple[str | None, str]:
    from pypdf import PdfReader

    with _quiet("pypdf"):
        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise ParseError("encrypted PDF (a password is needed)")
            pages = [page.extract_text() or "" for page in reader.pages]
            meta = reader.metadata
            title = meta.title if meta is not None else None
        except ParseError:
            raise
        except Exception as exc:  # any malformed PDF; pypdf raises many kinds
            raise ParseError(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    return (_squash(title) if isinstance(title, str) else None) or None, text


def file_fields(text_fields: tuple[str, ...]) -> tuple[str | None, str]:
    """(title field, body field) for an index's text fields; see ``document_source``."""
    if "title" in text_fields and "text" in text_fields:
        return "title", "text"
    if len(text_fields) >= 2:
        return text_fields[0], text_fields[1]
    return None, text_fields[0]


def document_source(parsed: ParsedFile, text_fields: tuple[str, ...]) -> dict[str, str]:
    """The document of one file: ``path`` always; title and body in the index's text fields
    (``title``/``text`` when it has both, else its first and second); an index with one text
    field gets the title as the first paragraph of it."""
    title_field, body_field = file_fields(text_fields)
    doc = {"path": parsed.path}
    if title_field is None:
        doc[body_field] = f"{parsed.title}\n\n{parsed.text}"
    else:
        doc[title_field] = parsed.title
        doc[body_field] = parsed.text
    return doc


def file_lines(scan: FolderScan, text_fields: tuple[str, ...]) -> list[Line]:
    """The parsed files as the Loader's input, one Line each, numbered from 1."""
    lines = []
    for number, parsed in enumerate(scan.files, start=1):
        source = document_source(parsed, text_fields)
        size = len(json.dumps(source, ensure_ascii=False).encode())
        lines.append(Line(number, parsed.path, source, size))
    return lines
