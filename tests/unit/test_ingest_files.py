"""``es-embed ingest DIR``'s parsing: each format to (title, text), the walk, the fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from es_embed.ingest.files import (
    ParsedFile,
    document_source,
    file_lines,
    parse_file,
    scan_folder,
)
from tests.files_support import write_pdf, write_text


def test_text_file_is_utf8_with_its_bom_dropped_and_titled_by_its_name(tmp_path: Path) -> None:
    path = tmp_path / "release-notes.txt"
    path.write_bytes("\ufeffCafé opens at nine.\n\n".encode())
    assert parse_file(path) == (None, "Café opens at nine.")
    scan = scan_folder(tmp_path)
    assert scan.files == [ParsedFile("release-notes.txt", "release-notes", "Café opens at nine.")]


def test_a_file_that_is_not_utf8_fails_with_the_byte_and_offset(tmp_path: Path) -> None:
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9 au lait")
    scan = scan_folder(tmp_path)
    assert scan.files == []
    assert [str(f) for f in scan.failures] == ["latin.txt: not UTF-8 text (byte 0xe9 at offset 3)"]


MARKDOWN = """\
Intro before any heading, with **bold**, _emphasis_ and a [link](https://example.com).

```
# not a heading: inside a fence
```

Install guide
=============

## Steps

1. Run `make install`.
2. See ![the diagram](d.png).

| part | colour |
|------|--------|
| valve | blue |

<div>Raw <b>HTML</b> block<script>alert(1)</script></div>

# A second level-1 heading
"""


def test_markdown_loses_its_markup_and_takes_the_first_level_1_heading(tmp_path: Path) -> None:
    title, text = parse_file(write_text(tmp_path / "guide.md", MARKDOWN))
    assert title == "Install guide"  # the setext heading; the fenced '# ...' is code
    assert text.split("\n\n") == [
        "Intro before any heading, with bold, emphasis and a link.",
        "# not a heading: inside a fence",
        "Install guide",
        "Steps",
        "Run make install.",
        "See the diagram.",
        "part",
        "colour",
        "valve",
        "blue",
        "Raw HTML block",
        "A second level-1 heading",
    ]


def test_markdown_front_matter_is_not_text_and_its_title_wins(tmp_path: Path) -> None:
    source = '---\ntitle: "Warranty terms"\nlayout: page\n---\n# Heading\n\nTwo years.\n'
    assert parse_file(write_text(tmp_path / "w.markdown", source)) == (
        "Warranty terms",
        "Heading\n\nTwo years.",
    )
    no_heading = write_text(tmp_path / "plain.md", "Just *text*.\n")
    assert parse_file(no_heading) == (None, "Just text.")


HTML = """<!doctype html>
<html><head><title> Valve  manual </title><style>p { color: red }</style>
<script>var secret = "not content";</script></head>
<body><nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<h1>Valves</h1><p>Turn the valve&nbsp;left &amp; wait.<br>Then right.</p>
<svg><title>icon</title><text>drawn</text></svg>
<ul><li>one</li><li>two</li></ul><noscript>enable JS</noscript>
<p>Unclosed paragraph<p>Last section</body></html>"""


def test_html_keeps_headings_and_paragraphs_and_drops_scripts_styles_and_nav(
    tmp_path: Path,
) -> None:
    title, text = parse_file(write_text(tmp_path / "manual.html", HTML))
    assert title == "Valve manual"
    assert text.split("\n\n") == [
        "Valves",
        "Turn the valve left & wait.",  # &nbsp; and runs of white space: one space
        "Then right.",
        "one",
        "two",
        "Unclosed paragraph",
        "Last section",
    ]


def test_html_without_a_title_takes_the_first_h1_and_honours_its_charset(tmp_path: Path) -> None:
    page = '<meta charset="iso-8859-1"><h1>Caf\xe9 <i>menu</i></h1><h1>Other</h1><p>Cr\xeapes</p>'
    path = tmp_path / "menu.htm"
    path.write_bytes(page.encode("latin-1"))
    assert parse_file(path) == ("Café menu", "Café menu\n\nOther\n\nCrêpes")
    path.write_bytes(b'<meta charset="klingon"><p>x</p>')
    scan = scan_folder(tmp_path)
    assert [str(f) for f in scan.failures] == ["menu.htm: declares an unknown charset 'klingon'"]


def test_a_multi_page_pdf_gives_every_page_in_order_and_its_metadata_title(
    tmp_path: Path,
) -> None:
    pages = ["Page one: unpacking.", "Page two: mounting.", "Page three: the fuse is F7."]
    path = write_pdf(tmp_path / "m.pdf", pages, title="Heater manual")
    title, text = parse_file(path)
    assert title == "Heater manual"
    assert text.split("\n\n") == pages
    untitled = write_pdf(tmp_path / "untitled.pdf", ["Only page."])
    assert parse_file(untitled) == (None, "Only page.")


def test_broken_and_empty_pdfs_are_failures_naming_the_file(tmp_path: Path) -> None:
    good = write_pdf(tmp_path / "good.pdf", ["Fine."]).read_bytes()
    (tmp_path / "cut.pdf").write_bytes(good[: len(good) // 2])
    (tmp_path / "fake.pdf").write_bytes(b"this is not a PDF at all")
    write_pdf(tmp_path / "blank.pdf", ["", ""])
    scan = scan_folder(tmp_path)
    assert [f.path for f in scan.files] == ["good.pdf"]
    reasons = {f.path: f.reason for f in scan.failures}
    assert set(reasons) == {"blank.pdf", "cut.pdf", "fake.pdf"}
    assert reasons["blank.pdf"] == "no text to load (scanned pages?)"
    assert reasons["cut.pdf"].startswith("not a readable PDF (")
    assert reasons["fake.pdf"].startswith("not a readable PDF (")


def test_the_walk_is_sorted_recursive_skips_hidden_and_counts_other_types(tmp_path: Path) -> None:
    for rel in ["b.txt", "a/z.md", "a/c.html", "A.txt", ".hidden.txt", ".git/config.txt"]:
        write_text(tmp_path / rel, f"text of {rel}")
    for rel in ["img.PNG", "a/notes.docx", "a/b.docx", "Makefile"]:
        write_text(tmp_path / rel, "x")
    (tmp_path / "UPPER.TXT").write_text("upper case suffix", encoding="utf-8")
    scan = scan_folder(tmp_path)
    assert [f.path for f in scan.files] == ["A.txt", "UPPER.TXT", "a/c.html", "a/z.md", "b.txt"]
    assert dict(scan.other) == {".docx": 2, ".png": 1, "(none)": 1}
    assert scan.failures == []


@pytest.mark.parametrize(
    ("text_fields", "expected"),
    [
        (("title", "text"), {"path": "d/f.md", "title": "T", "text": "Body."}),
        (("summary", "text", "title"), {"path": "d/f.md", "title": "T", "text": "Body."}),
        (("headline", "body", "tags"), {"path": "d/f.md", "headline": "T", "body": "Body."}),
        (("content",), {"path": "d/f.md", "content": "T\n\nBody."}),
    ],
)
def test_title_and_body_go_to_the_index_text_fields(
    text_fields: tuple[str, ...], expected: dict[str, str]
) -> None:
    assert document_source(ParsedFile("d/f.md", "T", "Body."), text_fields) == expected


def test_file_lines_carry_the_relative_path_as_id(tmp_path: Path) -> None:
    write_text(tmp_path / "x" / "one.txt", "One.")
    write_text(tmp_path / "two.md", "# Two\n\nSecond.")
    lines = file_lines(scan_folder(tmp_path), ("title", "text"))
    assert [(ln.number, ln.doc_id) for ln in lines] == [(1, "two.md"), (2, "x/one.txt")]
    assert lines[0].source == {"path": "two.md", "title": "Two", "text": "Two\n\nSecond."}
    assert lines[1].size == len('{"path": "x/one.txt", "title": "one", "text": "One."}')
