"""The status page at `/`: plain HTML, one row per job with a progress bar and links to its report; it reloads
itself while a job is active. And the small sign-in page that turns the token into a cookie for a browser."""

from __future__ import annotations

from html import escape
from typing import Any

REFRESH_S = 3

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #ddd; vertical-align: middle; }
progress { width: 12em; }
.state-finished { color: #1a7f37; } .state-failed { color: #cf222e; } .state-cancelled { color: #6e7781; }
.error { color: #cf222e; white-space: pre-wrap; font-size: 12px; }
"""


def _row(job: dict[str, Any]) -> str:
    progress = job["progress"]
    done, total = progress["done"], progress["total"]
    links = []
    for label, key in (("report", "report"), ("leaderboard.csv", "leaderboard"), ("events", "events")):
        href = job["links"].get(key)
        if href:
            links.append(f'<a href="{escape(href)}">{escape(label)}</a>')
    error = f'<div class="error">{escape(job["error"])}</div>' if job.get("error") else ""
    return (
        f'<tr class="job" id="job-{escape(job["job_id"])}" data-state="{escape(job["state"])}">'
        f'<td><code>{escape(job["job_id"])}</code></td>'
        f'<td>{escape(job["name"])}<br><small><code>{escape(job["run_id"])}</code></small></td>'
        f'<td>{escape(job["kind"])}</td>'
        f'<td class="state state-{escape(job["state"])}">{escape(job["state"])}'
        f'{" · " + escape(progress["stage"]) if progress.get("stage") and job["state"] == "running" else ""}'
        f'{error}</td>'
        f'<td><progress value="{done}" max="{max(total, 1)}"></progress> '
        f'<span class="count">{done}/{total}</span></td>'
        f'<td>{escape(job["created_at"])}</td>'
        f'<td>{" · ".join(links)}</td>'
        "</tr>"
    )


def status_page(jobs: list[dict[str, Any]]) -> str:
    active = any(job["state"] in ("queued", "running") for job in jobs)
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if active else ""
    rows = "\n".join(_row(job) for job in reversed(jobs)) or '<tr><td colspan="7">No job yet.</td></tr>'
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>swelab service</title>"
        f"{refresh}<style>{STYLE}</style></head><body>\n"
        "<h1>swelab service</h1>\n"
        "<table id=\"jobs\"><thead><tr><th>job</th><th>name / run</th><th>kind</th><th>state</th>"
        "<th>progress</th><th>submitted</th><th>artifacts</th></tr></thead>\n<tbody>\n"
        f"{rows}\n</tbody></table>\n</body></html>\n"
    )


def sign_in_page(message: str = "") -> str:
    note = f"<p>{escape(message)}</p>" if message else ""
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>swelab service: sign in</title>"
        f"<style>{STYLE}</style></head><body>\n<h1>swelab service</h1>{note}\n"
        '<form method="post" action="/login"><label>Service token '
        '<input type="password" name="token" autocomplete="current-password"></label> '
        '<button type="submit">Sign in</button></form>\n</body></html>\n'
    )
