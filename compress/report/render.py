"""Markdown and self-contained HTML (figures inlined as base64 PNG, no external URL) from the
same tables."""

from __future__ import annotations

import base64
import html

from compress.report.inputs import ReportInputs
from compress.report.tables import Table

STYLE = ("body{font-family:sans-serif;max-width:1150px;margin:24px auto;color:#222}"
         "table{border-collapse:collapse;margin:8px 0 24px}td,th{border:1px solid #bbb;padding:4px 8px;"
         "text-align:right}th{background:#eef}td:first-child,th:first-child{text-align:left}"
         "img{max-width:100%;display:block;margin:8px 0 24px}")


def markdown(inputs: ReportInputs, tables: list[Table], notes: list[str]) -> str:
    lines = [f"# Compression report: {inputs.model}", "", *notes, ""]
    for table in tables:
        lines += [f"## {table.title}", "", "| " + " | ".join(table.headers) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(table.headers) - 1)) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
        lines.append("")
    return "\n".join(lines)


def html_page(inputs: ReportInputs, tables: list[Table], notes: list[str], figures: list[tuple[str, bytes]]) -> str:
    title = f"Compression report: {html.escape(inputs.model)}"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{STYLE}</style></head><body><h1>{title}</h1>"]
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    for table in tables:
        parts.append(f"<h2>{html.escape(table.title)}</h2><table><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows]
        parts.append("</table>")
    for name, png in figures:
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{encoded}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
