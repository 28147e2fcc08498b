"""A tiny document model rendered twice: GitHub Markdown and PDF (fpdf2, core fonts).

Blocks: `Heading`, `Para`, `Bullets`, `Table`, `Figure`, `Code`. Inline markup is
limited to `code` spans, which the PDF prints as plain text. The PDF uses fpdf2's
core Helvetica/Courier fonts, which are latin-1 only: `latin1` maps the few
typographic characters the report can contain ("−", "Δ", "α", "≥", dashes, quotes) to
ASCII and replaces anything else with "?".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list


@dataclass
class Table:
    header: list
    rows: list
    align: list | None = None  # "l" | "r" | "c" per column
    caption: str = ""


@dataclass
class Figure:
    path: Path  # absolute
    rel: str  # relative to the report, for Markdown
    caption: str
    width_in: float = 6.0
    height_in: float = 4.0


@dataclass
class Code:
    lines: list


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks):
        self.blocks.extend(b for b in blocks if b is not None)
        return self


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------


def _md_cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * min(6, b.level + 1) + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {it}" for it in b.items] + [""]
        elif isinstance(b, Table):
            n = len(b.header)
            align = b.align or ["l"] * n
            sep = {"l": "---", "r": "---:", "c": ":---:"}
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "|".join(sep.get(a, "---") for a in align) + "|")
            for r in b.rows:
                out.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
            out.append("")
            if b.caption:
                out += [b.caption, ""]
        elif isinstance(b, Figure):
            out += [f"![{b.caption}]({b.rel})", "", f"*{b.caption}*", ""]
        elif isinstance(b, Code):
            out += ["```"] + list(b.lines) + ["```", ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------

_MAP = {
    "\u2212": "-",  # minus
    "\u2013": "-",
    "\u2014": "--",
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2026": "...",
    "\u0394": "delta ",
    "\u03b1": "alpha",
    "\u2265": ">=",
    "\u2264": "<=",
    "\u2248": "~",
    "\u2192": "->",
    "\u2713": "*",
    "\u00a0": " ",
}


def latin1(s) -> str:
    s = str(s)
    for k, v in _MAP.items():
        s = s.replace(k, v)
    return s.encode("latin-1", "replace").decode("latin-1")


def _plain(s: str) -> str:
    return latin1(s.replace("`", "").replace("**", ""))


def to_pdf(doc: Document, path: Path) -> None:
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_margins(12, 12, 12)
    pdf.set_auto_page_break(True, margin=12)
    pdf.set_title(latin1(doc.title))
    pdf.set_creator("python -m reports")
    import datetime as _dt

    pdf.set_creation_date(_dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc))  # reproducible bytes
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    height = pdf.h - pdf.t_margin - pdf.b_margin

    def text(s, size=9.0, style="", family="Helvetica", h=None):
        pdf.set_font(family, style, size)
        pdf.multi_cell(0, h or size * 0.5, _plain(s), new_x="LMARGIN", new_y="NEXT")

    def caption_height(s, size=8.0):
        pdf.set_font("Helvetica", "", size)
        return pdf.multi_cell(0, size * 0.5, _plain(s), dry_run=True, output="HEIGHT")

    def fig_width(b):
        """(width, aspect) of a figure on the page, small enough that the figure and
        its caption fit on one page together."""
        aspect = b.height_in / b.width_in if b.width_in else 0.7
        return min(width, 25.4 * b.width_in * 1.1, (height - 4 - caption_height(b.caption)) / aspect), aspect

    text(doc.title, 16, "B", h=9)
    pdf.ln(2)
    for i, b in enumerate(doc.blocks):
        if isinstance(b, Heading):
            size = {1: 14.0, 2: 12.0, 3: 10.5}.get(b.level, 10.0)
            nxt = doc.blocks[i + 1] if i + 1 < len(doc.blocks) else None
            need = 45 if b.level >= 3 else 30
            if isinstance(nxt, Figure) and Path(nxt.path).exists():
                w, aspect = fig_width(nxt)
                need = max(need, w * aspect + caption_height(nxt.caption) + 12)  # the heading, figure, caption
            if b.level == 1 and pdf.page_no() >= 1 and pdf.get_y() > pdf.t_margin + 30:
                pdf.add_page()
            elif pdf.get_y() > pdf.h - pdf.b_margin - need:
                pdf.add_page()  # keep a heading with what follows it
            pdf.ln(2)
            text(b.text, size, "B", h=size * 0.55)
            pdf.ln(1)
        elif isinstance(b, Para):
            text(b.text)
            pdf.ln(1.5)
        elif isinstance(b, Bullets):
            for it in b.items:
                pdf.set_font("Helvetica", "", 9)
                pdf.set_x(pdf.l_margin + 3)
                pdf.multi_cell(0, 4.5, _plain("- " + str(it)), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
        elif isinstance(b, Table):
            _pdf_table(pdf, b, width, FontFace)
            if b.caption:
                text(b.caption, 8)
            pdf.ln(2)
        elif isinstance(b, Figure):
            if not Path(b.path).exists():
                text(f"[missing figure: {b.rel}]")
                continue
            w, aspect = fig_width(b)
            # A caption belongs with its figure: both move to a new page if they do not fit together.
            if pdf.get_y() + w * aspect + 1 + caption_height(b.caption) > pdf.h - pdf.b_margin:
                pdf.add_page()
            pdf.image(str(b.path), x=pdf.l_margin + (width - w) / 2, w=w)
            pdf.ln(1)
            text(b.caption, 8)
            pdf.ln(2)
        elif isinstance(b, Code):
            pdf.set_font("Courier", "", 7.5)
            pdf.set_fill_color(245, 245, 245)
            for line in b.lines:
                pdf.multi_cell(0, 3.6, latin1(line), fill=True, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))


def _pdf_table(pdf, t: Table, width: float, FontFace) -> None:
    n = len(t.header)
    rows = [[_plain(c) for c in r] for r in t.rows]
    header = [_plain(h) for h in t.header]
    size = 8.0 if n <= 6 else 7.0
    pdf.set_font("Helvetica", "", size)

    # Column widths from content: the longest word sets a minimum, long text wraps.
    def sw(s, bold):
        pdf.set_font("Helvetica", "B" if bold else "", size)
        return pdf.get_string_width(s)

    want, least = [], []
    for j in range(n):
        cells = [(header[j], True)] + [(r[j], False) for r in rows if j < len(r)]
        want.append(min(max(sw(c, b) for c, b in cells) + 3, 90))
        least.append(max(sw(w, b) for c, b in cells for w in (c.split() or [""])) + 3)
    pdf.set_font("Helvetica", "", size)
    total = sum(want)
    widths = want if total <= width else [max(l_, w * width / total) for w, l_ in zip(want, least)]
    scale = min(1.0, width / sum(widths)) if sum(widths) > width else 1.0
    widths = [w * scale * (1 - 1e-9) for w in widths]  # fpdf refuses a table a rounding error too wide
    align_map = {"l": "LEFT", "r": "RIGHT", "c": "CENTER"}
    aligns = tuple(align_map.get(a, "LEFT") for a in (t.align or ["l"] * n))
    with pdf.table(
        width=sum(widths),
        col_widths=tuple(widths),
        text_align=aligns,
        line_height=size * 0.5,
        align="LEFT",
        headings_style=FontFace(emphasis="BOLD", fill_color=(230, 230, 230)),
        padding=0.8,
    ) as table:
        for r in [header] + rows:
            row = table.row()
            for j in range(n):
                row.cell(r[j] if j < len(r) else "")
