"""`swelab service`: the HTTP API (FastAPI + uvicorn) over the job store, the supervisor and the run folders.

Every route but /health needs the bearer token of SWELAB_SERVICE_TOKEN (a browser may hold it in a cookie set by
/login, for reading only). The token is compared in constant time and never logged: uvicorn's access log is off.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import shutil
import sys
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pandas as pd
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from swelab.paths import project_root
from swelab.rundir import RunFolderError, RunLayout
from swelab.service import jobs, page
from swelab.service.events import EventLog, progress
from swelab.service.policy import Limits, Refused
from swelab.service.store import JobStore, StoreError
from swelab.service.supervisor import TOKEN_ENV, Supervisor, events_of
from swelab.service.worker import EVENTS

COOKIE = "swelab_token"
SSE_POLL_S = 0.2
SSE_KEEPALIVE_S = 15.0


def job_summary(job: Any, detail: bool = False) -> dict[str, Any]:
    """A job as the API shows it: its row, progress from its events, links; with `detail`, counts by cell
    status and verdict from the run folder, and the leaderboard once finished."""
    data = job.as_dict()
    state = progress(events_of(job).read_all())
    data["progress"] = state.as_dict()
    if job.state == "finished":
        data["progress"]["done"] = data["progress"]["total"]
    layout = RunLayout(job.run_dir)
    base = f"/jobs/{job.id}"
    data["links"] = {"self": base, "events": f"{base}/events", "files": f"{base}/files"}
    if layout.report_html.is_file():
        data["links"]["report"] = f"{base}/artifacts/report.html"
    if layout.leaderboard_csv.is_file():
        data["links"]["leaderboard"] = f"{base}/artifacts/leaderboard.csv"
    if detail:
        try:
            data["cells"] = dict(sorted(Counter(cell.status for cell in layout.cells()).items()))
            verdicts = layout.verdicts() if layout.eval_dir.is_dir() else []
        except RunFolderError as exc:
            data["cells"], verdicts, data["run_folder_error"] = {}, [], str(exc)
        data["verdicts"] = {"graded": len(verdicts), "resolved": sum(v.resolved for v in verdicts)}
        if job.state == "finished" and layout.leaderboard_csv.is_file():
            board = pd.read_csv(layout.leaderboard_csv)
            data["leaderboard"] = json.loads(board.to_json(orient="records"))
    return data


async def read_capped(request: Request, cap: int, what: str) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `cap` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise Refused(413, f"{what} is {length} bytes; this service takes at most {cap}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise Refused(413, f"{what} is over {cap} bytes; this service takes at most {cap}")
        chunks.append(chunk)
    return b"".join(chunks)


def sse(event_id: int, kind: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, sort_keys=True)}\n\n"


def create_app(settings: jobs.Settings, store: JobStore, token: str, max_jobs: int = 1) -> FastAPI:
    if not token:
        raise ValueError(f"{TOKEN_ENV}: the service needs a token")
    supervisor = Supervisor(store, settings, max_jobs)
    expected = token.encode()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        supervisor.start()
        try:
            yield
        finally:
            supervisor.stop()

    app = FastAPI(title="swelab service", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.supervisor = supervisor
    app.state.server = None  # the uvicorn server, when main() runs one: event streams end when it stops

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else None
        if given is None and request.method in ("GET", "HEAD"):
            given = request.cookies.get(COOKIE)  # a browser's page views; never for changes
        return given is not None and hmac.compare_digest(given.encode(), expected)

    def require_token(request: Request) -> None:
        if not authorized(request):
            raise HTTPException(401, "a bearer token is needed (Authorization: Bearer $SWELAB_SERVICE_TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    def get_job(job_id: str) -> Any:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    def status_page(request: Request) -> HTMLResponse:
        if not authorized(request):
            return HTMLResponse(page.sign_in_page(), status_code=401)
        return HTMLResponse(page.status_page([job_summary(job) for job in store.list()]))

    @app.get("/login", response_class=HTMLResponse)
    def sign_in_form() -> HTMLResponse:
        return HTMLResponse(page.sign_in_page())

    @app.post("/login")
    async def sign_in(request: Request) -> Any:
        form = parse_qs((await read_capped(request, 4096, "the sign-in form")).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), expected):
            return HTMLResponse(page.sign_in_page("That is not the service token."), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="lax", path="/")
        return response

    @app.post("/jobs", status_code=201, dependencies=[Depends(require_token)])
    async def submit(request: Request, predictions: str | None = None, filename: str | None = None,
                     model: str | None = None, dataset: str = "minibench", split: str | None = None,
                     name: str | None = None, eval_backend: str | None = None) -> JSONResponse:
        """A params document (YAML or JSON) in the body; or, with ?predictions=FILE_NAME, a predictions file."""
        if predictions is not None:
            body = await read_capped(request, settings.limits.max_upload_bytes, "the predictions file")
            submission = await run_in_threadpool(jobs.prepare_predictions, settings, body, predictions, model,
                                                 dataset, split, name, eval_backend)
        else:
            body = await read_capped(request, settings.limits.max_params_bytes, "the params document")
            submission = await run_in_threadpool(jobs.prepare_params, settings, body, filename)
        job, existing = supervisor.submit(submission)
        if existing:
            await run_in_threadpool(_remove_tree, submission.job_dir)
        body_out = {"job_id": job.id, "run_id": job.run_id, "state": job.state, "existing": existing}
        return JSONResponse(body_out, status_code=200 if existing else 201)

    @app.get("/jobs", dependencies=[Depends(require_token)])
    def list_jobs() -> list[dict[str, Any]]:
        return [job_summary(job) for job in store.list()]

    @app.get("/jobs/{job_id}", dependencies=[Depends(require_token)])
    def show_job(job_id: str) -> dict[str, Any]:
        return job_summary(get_job(job_id), detail=True)

    @app.delete("/jobs/{job_id}", dependencies=[Depends(require_token)])
    def cancel_job(job_id: str) -> dict[str, Any]:
        get_job(job_id)
        return job_summary(supervisor.cancel(job_id), detail=True)

    @app.get("/jobs/{job_id}/events", dependencies=[Depends(require_token)])
    async def job_events(job_id: str, request: Request, after: int = 0) -> StreamingResponse:
        """Server-sent events from the job's log; ids are line numbers (Last-Event-ID resumes after one)."""
        job = get_job(job_id)
        last = request.headers.get("last-event-id", "")
        seen = int(last) if last.isdigit() else max(after, 0)
        log = EventLog(Path(job.job_dir) / EVENTS)

        async def stream():
            offset, number, quiet = 0, 0, 0.0
            while True:
                batch, offset = await run_in_threadpool(log.read_from, offset)
                for event in batch:
                    number += 1
                    if number > seen:
                        yield sse(number, event.get("event", "message"), event)
                        if event.get("event") == "done":
                            return
                if batch:
                    quiet = 0.0
                current = await run_in_threadpool(store.get, job_id)
                if current is None or (current.terminal and not batch):
                    yield sse(number, "end", {"state": current.state if current else "gone"})
                    return
                server = request.app.state.server
                if await request.is_disconnected() or (server is not None and server.should_exit):
                    return
                await asyncio.sleep(SSE_POLL_S)
                quiet += SSE_POLL_S
                if quiet >= SSE_KEEPALIVE_S:
                    quiet = 0.0
                    yield ": keepalive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/jobs/{job_id}/files", dependencies=[Depends(require_token)])
    def job_files(job_id: str) -> list[dict[str, Any]]:
        """Every plain file of the run folder (no symbolic link is followed)."""
        root = Path(get_job(job_id).run_dir)
        found = []
        for folder, _dirs, names in os.walk(root, followlinks=False):
            for file_name in names:
                path = Path(folder) / file_name
                if path.is_file() and not path.is_symlink():
                    found.append({"path": path.relative_to(root).as_posix(), "size": path.stat().st_size})
        return sorted(found, key=lambda f: f["path"])

    @app.get("/jobs/{job_id}/artifacts/{path:path}", dependencies=[Depends(require_token)])
    def artifact(job_id: str, path: str) -> FileResponse:
        """A file of the run folder, never one outside it (.., absolute paths, links that lead out)."""
        root = Path(get_job(job_id).run_dir).resolve()
        try:
            target = (root / path).resolve()
        except (OSError, ValueError):
            raise HTTPException(400, "not a usable path") from None
        if not target.is_relative_to(root):
            raise HTTPException(403, "that path is outside the job's run folder")
        if not target.is_file():
            raise HTTPException(404, f"no file {path} in the job's run folder")
        return FileResponse(target, headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/jobs/{job_id}/log", dependencies=[Depends(require_token)])
    def worker_log(job_id: str) -> PlainTextResponse:
        path = Path(get_job(job_id).job_dir) / "worker.log"
        return PlainTextResponse(path.read_text(encoding="utf-8", errors="replace") if path.exists() else "")

    return app


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def build_settings(args: argparse.Namespace) -> jobs.Settings:
    root = project_root()
    outputs = Path(args.outputs or root / "outputs").resolve()
    state = Path(args.state_dir or outputs / ".service").resolve()
    allowed = tuple(Path(p).resolve() for p in (args.allow_root or [root]))
    limits = replace(Limits(), max_upload_bytes=args.max_upload_bytes, max_params_bytes=args.max_params_bytes)
    return jobs.Settings(outputs_dir=outputs, state_dir=state, allowed_roots=allowed, project_root=root,
                         limits=limits)


def main(argv: list[str] | None = None) -> int:
    defaults = Limits()
    parser = argparse.ArgumentParser(prog="swelab service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--outputs", help="where run folders go (default: the project's outputs/)")
    parser.add_argument("--state-dir", help="job folders and uploads (default: OUTPUTS/.service)")
    parser.add_argument("--db", help="job store URL: sqlite:///PATH (default: sqlite:///STATE_DIR/jobs.sqlite3) or "
                        "postgresql://USER:PASSWORD@HOST:PORT/DB for several replicas (the service-pg extra)")
    parser.add_argument("--service-id", help="this replica's id in the store (default: a fresh one); a stable id "
                        "takes its own running jobs back at once after a crash instead of after their lease")
    parser.add_argument("--allow-root", action="append",
                        help="a folder params may name files in (repeatable; default: the project root)")
    parser.add_argument("--max-jobs", type=int, default=1, help="jobs running at once")
    parser.add_argument("--max-upload-bytes", type=int, default=defaults.max_upload_bytes)
    parser.add_argument("--max-params-bytes", type=int, default=defaults.max_params_bytes)
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"swelab service: set {TOKEN_ENV} to the bearer token clients must send", file=sys.stderr)
        return 2
    settings = build_settings(args)
    try:
        store = JobStore(args.db or f"sqlite:///{settings.state_dir / 'jobs.sqlite3'}", owner=args.service_id)
    except StoreError as exc:
        print(f"swelab service: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, store, token, args.max_jobs)
    config = uvicorn.Config(app, host=args.host, port=args.port, access_log=False, timeout_graceful_shutdown=3,
                            log_level="info")
    server = uvicorn.Server(config)
    app.state.server = server
    print(f"swelab service: http://{args.host}:{args.port} · runs in {settings.outputs_dir} · jobs in {store.location}",
          flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
