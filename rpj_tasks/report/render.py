"""The report's HTML: one self-contained page, inline CSS and inline SVG plots drawn here.

No script, no external resource (a Content-Security-Policy meta tag forbids them), so the page
opens offline, from a file, an object store or the api-server's plugin route alike.  Every number
shown carries ``data-key`` (its place in the JSON twin) and ``data-value`` (the exact value), so a
test can compare the page with the data it was made from.
"""

from __future__ import annotations

import html
from typing import Any

from rpj_tasks.core.summary import DROP_REASONS

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot{border:1px solid #eee;background:#fff}
.note{color:#666;font-size:.9em}.bad{color:#b00}.ok{color:#070}
"""
BAR = "#4a78b5"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def num(key: str, value: Any, text: str | None = None) -> str:
    """A number with its key and exact value (``data-value`` is JSON: ``null`` for None)."""
    import json

    return f'<span data-key="{esc(key)}" data-value="{esc(json.dumps(value))}">{esc(fmt(value) if text is None else text)}</span>'


def pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.2f}%"


def table(head: list[str], rows: list[list[str]]) -> str:
    """Rows of already escaped cells."""
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out) + "</table>"


# ---------------------------------------------------------------------------- SVG


def bar_chart(name: str, title: str, labels: list[str], values: list[int], *, width: int = 460, height: int = 200) -> str:
    """Vertical bars with a label under each and the value above it."""
    left, bottom, top = 40, 40, 34
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(values, default=0) or 1
    step = plot_w / max(1, len(values))
    parts = [
        f'<svg class="plot" data-plot="{esc(name)}" role="img" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{esc(title)}</title>',
        f'<text x="{width / 2:.1f}" y="15" text-anchor="middle" font-size="13">{esc(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>',
    ]
    for i, (label, value) in enumerate(zip(labels, values)):
        h = plot_h * value / peak
        x = left + i * step + step * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" fill="{BAR}">'
            f"<title>{esc(label)}: {esc(fmt(value))}</title></rect>"
        )
        parts.append(
            f'<text x="{x + step * 0.35:.1f}" y="{top + plot_h - h - 3:.1f}" text-anchor="middle" font-size="10">{esc(fmt(value))}</text>'
        )
        parts.append(
            f'<text x="{x + step * 0.35:.1f}" y="{top + plot_h + 14:.1f}" text-anchor="middle" font-size="11">{esc(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(name: str, h: dict[str, Any], *, width: int = 360, height: int = 190) -> str:
    """A histogram of ``h`` (:func:`rpj_tasks.report.data.histogram`), x axis in its scale."""
    left, bottom, top = 40, 36, 22
    plot_w, plot_h = width - left - 12, height - bottom - top
    counts, edges = h["counts"], h["edges"]
    title = h["label"] + (" (log10)" if h["scale"] == "log10" else "")
    parts = [
        f'<svg class="plot" data-plot="{esc(name)}" role="img" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{esc(title)}</title>',
        f'<text x="{width / 2:.1f}" y="14" text-anchor="middle" font-size="12">{esc(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>',
    ]
    if not counts:
        parts.append(f'<text x="{width / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle" font-size="12">no values</text>')
    else:
        peak = max(counts) or 1
        step = plot_w / len(counts)
        for i, c in enumerate(counts):
            bh = plot_h * c / peak
            parts.append(
                f'<rect x="{left + i * step:.1f}" y="{top + plot_h - bh:.1f}" width="{max(step - 1, 0.5):.1f}" height="{bh:.1f}" '
                f'fill="{BAR}"><title>[{edges[i]:g}, {edges[i + 1]:g}): {c}</title></rect>'
            )
        parts.append(f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10">{esc(fmt(peak))}</text>')
        parts.append(f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" font-size="10">0</text>')
        for i in (0, len(counts) // 2, len(counts)):
            parts.append(
                f'<text x="{left + i * step:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10">{edges[i]:g}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------- the page


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def render_report(r: dict[str, Any]) -> str:
    """The page of one snapshot's report data."""
    snap = r["snapshot"]
    docs = r["documents"]
    body = [
        f"<h1>Snapshot {esc(snap)} ({esc(r['crawl'])})</h1>",
        '<p class="note">Made from the records and files under the storage root and, when a DAG run wrote it, '
        "that run's id and task states: the same files give the same page when written by <code>rpj report</code>, "
        "and every DAG run rewrites it (its run id and task states are its own). "
        'The numbers are also in <a href="report.json">report.json</a>. '
        '<a href="../index.html">All published snapshots</a>.</p>',
        f"<p>Shards planned: {num('shards.planned', r['shards']['planned'])} ({esc(r['shards']['list'])}). "
        f"Validation: {_verdict(r['validation']['passed'])}; published: {num('validation.published', r['validation']['published'])}.</p>",
    ]
    body += _failures(r)
    # documents per stage and drop reason
    body.append("<h2>Documents per stage</h2>")
    labels = {label: code for code, label in DROP_REASONS.items()}
    rows = [["read (WET records with text)", num("documents.read", docs["read"])]]
    rows += [
        [f"dropped: {esc(label)} <span class=note>({esc(labels[label])})</span>", num(f"documents.dropped.{label}", n)]
        for label, n in docs["dropped"].items()
    ]
    rows.append(["kept (then split into perplexity buckets)", num("documents.kept", docs["kept"])])
    rows.append(["annotated (head and middle, finished shards)", num("annotated.documents", r["annotated"]["documents"])])
    removed = {"after_exact": "exact dedup", "after_fuzzy": "fuzzy dedup", "after_both": "exact and fuzzy dedup"}
    for key, value in (r["dedup"].get("removed_by_tokens_files") or {}).items():
        rows.append(
            [f"removed by {removed[key]} (token files of these shards)", num(f"dedup.removed_by_tokens_files.{key}", value)]
        )
    body.append(table(["stage", "documents"], rows))
    if docs["bad_records"] or docs["damaged_sources"]:
        bad = ", ".join(f"{esc(k)} {num(f'documents.bad_records.{k}', v)}" for k, v in docs["bad_records"].items())
        body.append(
            f"<p>Broken records skipped: {bad or '-'}; source files damaged at the source: {num('documents.damaged_sources', docs['damaged_sources'])}.</p>"
        )
    # languages and buckets
    body.append("<h2>Languages and perplexity buckets (documents kept)</h2>")
    buckets = list(r["buckets_kept"])
    rows = [
        [esc(lang)]
        + [num(f"kept.{lang}.{b}", per[b]) for b in buckets]
        + [num(f"languages_kept.{lang}", r["languages_kept"][lang])]
        for lang, per in r["kept"].items()
    ]
    rows.append(
        ["all"]
        + [num(f"buckets_kept.{b}", r["buckets_kept"][b]) for b in buckets]
        + [num("documents.kept.total", sum(r["languages_kept"].values()))]
    )
    body.append(table(["language", *buckets, "all"], rows))
    body.append('<div class="plots">')
    body.append(
        bar_chart("languages", "documents kept per language", list(r["languages_kept"]), list(r["languages_kept"].values()))
    )
    body.append(bar_chart("buckets", "documents kept per perplexity bucket", buckets, list(r["buckets_kept"].values())))
    body.append(
        bar_chart("dropped", "documents dropped per reason", [_short(k) for k in docs["dropped"]], list(docs["dropped"].values()))
    )
    body.append("</div>")
    body += _dedup(r["dedup"])
    body += _tokens(r["tokens"])
    body += _stages(r["stages"])
    body += _signals(r["signals"])
    return _page(f"rpj report {snap}", body)


def _short(label: str) -> str:
    return {"too short": "short", "too large (max_record_bytes)": "large", "all lines duplicate": "dup lines",
            "other language": "language", "LID score below threshold": "LID score"}.get(label, label)  # fmt: skip


def _verdict(passed: bool | None) -> str:
    if passed is None:
        return num("validation.passed", None, "not run")
    return (
        f'<span class="{"ok" if passed else "bad"}">{num("validation.passed", passed, "passed" if passed else "FAILED")}</span>'
    )


def _failures(r: dict[str, Any]) -> list[str]:
    from rpj_tasks.core.plan import format_shards

    f = r["failures"]
    out = ["<h2>Failed or unfinished shards</h2>"]
    if f["unfinished"]:
        rows = [
            [esc(stage), num(f"failures.unfinished.{stage}", len(ids)), esc(format_shards(ids))]
            for stage, ids in f["unfinished"].items()
        ]
        out.append('<p class="bad">Shards without a record of a stage (it did not finish, or was not run):</p>')
        out.append(table(["stage", "shards", "which"], rows))
    else:
        out.append('<p class="ok">Every planned shard finished every stage.</p>')
    if f["validation_failed"]:
        out.append(f'<p class="bad">Validation failed for shards {esc(format_shards(f["validation_failed"]))}.</p>')
    out.append(
        f"<p>Download retries inside tasks (transient errors, from the download records): "
        f"{num('failures.download_retries', f['download_retries'])}.</p>"
    )
    air = f["airflow"]
    if air is None:
        out.append('<p class="note">No Airflow run information (written outside a DAG run).</p>')
    else:
        states = ", ".join(f"{esc(s)} {num(f'failures.airflow.by_state.{s}', n)}" for s, n in air["by_state"].items())
        out.append(
            f"<p>Airflow run <code>{esc(air['run_id'])}</code> of <code>{esc(air['dag_id'])}</code>, task instances when the report ran: {states}."
        )
        if air["not_successful"]:
            out.append(f' <span class="bad">Not successful: {esc(", ".join(air["not_successful"]))}</span>')
        out.append(' <span class="note">(Airflow retries are not visible to a task; the states are.)</span></p>')
    return out


def _dedup(d: dict[str, Any]) -> list[str]:
    rows = [
        [
            "exact (duplicates/)",
            num("dedup.exact_documents", d["exact_documents"]),
            num("dedup.exact_duplicates", d["exact_duplicates"]),
            num("dedup.exact_rate", d["exact_rate"], pct(d["exact_rate"])),
            "-",
        ],
        [
            f"fuzzy (clusters/, Jaccard {esc(d['clusters_threshold'])})",
            num("dedup.fuzzy_documents", d["fuzzy_documents"]),
            num("dedup.fuzzy_removed", d["fuzzy_removed"]),
            num("dedup.fuzzy_rate", d["fuzzy_rate"], pct(d["fuzzy_rate"])),
            f"{num('dedup.clustered_documents', d['clustered_documents'])} in {num('dedup.clusters', d['clusters'])} clusters",
        ],
    ]
    out = [
        "<h2>Duplicates (whole snapshot)</h2>",
        '<p class="note">The dedup steps\' own figures, over every shard of the snapshot they ran over: each rate is '
        "over the documents that step read (head and middle; fuzzy: every clustered document but one per cluster "
        "is a duplicate).</p>",
    ]
    if d.get("subset"):
        out.append(
            '<p class="bad">This report covers fewer shards than the snapshot has: these counts and rates are the '
            "whole snapshot's, not those of the reported shards (whose documents removed by dedup are in the token "
            "rows above).</p>"
        )
    out.append(table(["kind", "documents", "duplicates", "rate", "clusters"], rows))
    return out


def _tokens(t: dict[str, Any] | None) -> list[str]:
    out = ["<h2>Documents and tokens per language, before and after dedup</h2>"]
    if t is None:
        return out + ["<p>No token counts yet.</p>"]
    sets = ["all", "after_exact", "after_fuzzy", "after_both"]
    head = ["language"] + [f"{s.replace('_', ' ')} {w}" for s in sets for w in ("docs", "tokens")]
    rows = [
        [esc(lang)] + [num(f"tokens.{lang}.{s}.{w}", per[s][w]) for s in sets for w in ("documents", "tokens")]
        for lang, per in t.items()
    ]
    out.append(table(head, rows))
    langs = [k for k in t if k != "total"]
    out.append('<div class="plots">')
    out.append(bar_chart("tokens_all", "tokens per language (all documents)", langs, [t[k]["all"]["tokens"] for k in langs]))
    out.append(
        bar_chart(
            "tokens_after_both",
            "tokens per language after exact and fuzzy dedup",
            langs,
            [t[k]["after_both"]["tokens"] for k in langs],
        )
    )
    out.append("</div>")
    return out


def _stages(stages: list[dict[str, Any]]) -> list[str]:
    rows = [
        [
            esc(s["stage"]),
            num(f"stages.{s['stage']}.shards", s["shards"]),
            num(f"stages.{s['stage']}.documents", s["documents"]),
            num(f"stages.{s['stage']}.wall_seconds", s["wall_seconds"]),
            num(f"stages.{s['stage']}.busy_seconds", s["busy_seconds"]),
            num(f"stages.{s['stage']}.documents_per_busy_second", s["documents_per_busy_second"]),
        ]
        for s in stages
    ]
    return [
        "<h2>Throughput per stage</h2>",
        '<p class="note">From the per-shard records: wall seconds of the shard tasks, and busy seconds (the sum of the '
        "records' per-step timings over worker processes: a proxy of core-seconds that includes I/O waits; CPU time is "
        "not recorded). Summed over shards.</p>",
        table(["stage", "shards", "documents", "wall s", "busy s", "docs / busy s"], rows),
    ]


def _signals(s: dict[str, Any]) -> list[str]:
    sample = s["sample"]
    note = (
        f"Read {num('signals.sample.documents', sample['documents'])} documents of "
        f"{num('signals.sample.files_read', sample['files_read'])} of the "
        f"{num('signals.sample.files', sample['files'])} quality-signals files"
        + (
            f" (sampled: files evenly spaced in sorted order, at most the first {fmt(sample['per_file_cap'])} "
            f"documents of each, {fmt(sample['files_cut'])} files cut)."
            if sample["sampled"]
            else " (every document)."
        )
        + (f" Unreadable lines skipped: {num('signals.sample.bad_lines', sample['bad_lines'])}." if sample["bad_lines"] else "")
    )
    out = ["<h2>Quality signals (document level)</h2>", f'<p class="note">{note}</p>', '<div class="plots">']
    out += [histogram_svg(name, h) for name, h in s["histograms"].items()]
    out.append("</div>")
    rows = [
        [f"<code>{esc(name)}</code>"]
        + [num(f"signals.histograms.{name}.{k}", h[k]) for k in ("n", "nulls", "min", "p10", "p50", "p90", "max", "mean")]
        for name, h in s["histograms"].items()
    ]
    out.append(table(["signal", "values", "null", "min", "p10", "median", "p90", "max", "mean"], rows))
    return out


# ---------------------------------------------------------------------------- the cross-snapshot index


def render_index(index: dict[str, Any]) -> str:
    rows = []
    for e in index["snapshots"]:
        snap = e["snapshot"]
        link = f'<a href="{esc(snap)}/index.html">{esc(snap)}</a>' if e["report"] else esc(snap)
        t = e["tokens"] or {}
        rows.append(
            [
                link,
                num(f"snapshots.{snap}.shards", e["shards"]),
                esc(", ".join(e["languages"])),
                num(f"snapshots.{snap}.documents", e["documents"]),
                num(f"snapshots.{snap}.tokens.all", (t.get("all") or {}).get("tokens")),
                num(f"snapshots.{snap}.tokens.after_both", (t.get("after_both") or {}).get("tokens")),
                num(f"snapshots.{snap}.files", e["files"]),
            ]
        )
    body = [
        "<h1>rpj: published snapshots</h1>",
        '<p class="note">From the release manifests (<code>listings/{snapshot}.manifest.json</code>); the numbers are '
        'also in <a href="index.json">index.json</a>.</p>',
        f"<p>{num('published', len(index['snapshots']))} snapshots published; documents "
        f"{num('total.documents', index['total']['documents'])}, tokens after exact and fuzzy dedup "
        f"{num('total.tokens_after_both', index['total']['tokens_after_both'])}.</p>",
        table(["snapshot", "shards", "languages", "documents", "tokens", "tokens after dedup", "files"], rows),
    ]
    return _page("rpj published snapshots", body)
