"""`swelab service` end to end, through HTTP only: a service subprocess on a free loopback port runs jobs of gold,
empty and a scripted model (a local OpenAI-compatible test server) on bundled tasks; jobs survive a restart
without redoing finished cells, give the leaderboard the library gives for the same params, can be cancelled,
say when their worker died; the token, the path policy, the artifact route and the upload cap refuse what they
must; the Python client and `swelab submit` follow a job; the status page shows it in headless Chromium.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest
from bs4 import BeautifulSoup
from fake_openai_server import FakeOpenAIServer, ok
from scaffold import chromium_dom, write_params

from swelab import minibench
from swelab.analyze import results as tidy
from swelab.analyze.artifacts import write_analysis
from swelab.cli import main as cli_main
from swelab.client import Client, parse_sse
from swelab.evaluate.backends import evaluate_run
from swelab.generate.runner import generate
from swelab.params import load_params
from swelab.sandbox import bwrap_available
from swelab.select.instances import resolve_instances, write_run_instances
from swelab.service.policy import Refused, check_paths, local_paths
from swelab.service.store import JobStore, StoreError

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed (tests/ensure_bwrap.sh)")

TOKEN = "service-test-token-5f1c2a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TASKS = ("minibench__textkit-1", "minibench__unitkit-1")
BOUND_S = 300  # the longest any one wait may take on a loaded machine; never asserted as a duration
MAX_UPLOAD = 50_000
MAX_PARAMS = 20_000
# Columns that measure time, not results: they differ between any two runs of the same params.
TIMING = re.compile(r"^(wall_clock_|attempt_s_|call_s_|ttft)|per_(hour|minute|second)$")


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """`swelab service` in a subprocess; stop() is a restart's first half (SIGTERM, as a supervisor sends)."""

    def __init__(self, root: Path, cache: Path, port: int | None = None):
        self.root, self.cache = root, cache
        root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = root / "service.log"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def start(self) -> Service:
        env = {**os.environ, "SWELAB_SERVICE_TOKEN": TOKEN, "SWELAB_CACHE": str(self.cache)}
        command = [sys.executable, "-m", "swelab.cli", "service", "--port", str(self.port),
                   "--outputs", str(self.outputs), "--max-upload-bytes", str(MAX_UPLOAD),
                   "--max-params-bytes", str(MAX_PARAMS)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._healthy, f"the service on {self.url} to answer /health")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the service exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, headers=AUTH, timeout=60, **kwargs)

    def post(self, path: str, content: bytes | str, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, content=content, headers=AUTH, timeout=60, **kwargs)

    def job(self, job_id: str) -> dict:
        response = self.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def follow(self, job_id: str, after: int = 0) -> list[dict]:
        """The job's server-sent events from `after` to its end."""
        events = []
        with httpx.stream("GET", f"{self.url}/jobs/{job_id}/events", headers={**AUTH, "Last-Event-ID": str(after)},
                          timeout=httpx.Timeout(30, read=BOUND_S)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in parse_sse(response.iter_lines()):
                events.append({**event.data, "_id": event.id, "_kind": event.kind})
                if event.kind in ("done", "end"):
                    break
        return events

    def follow_until(self, job_id: str, stop: Callable[[dict], bool]) -> list[dict]:
        """The job's events up to the first one `stop` accepts (the stream is then closed)."""
        events = []
        with httpx.stream("GET", f"{self.url}/jobs/{job_id}/events", headers=AUTH,
                          timeout=httpx.Timeout(30, read=BOUND_S)) as response:
            for event in parse_sse(response.iter_lines()):
                events.append({**event.data, "_id": event.id, "_kind": event.kind})
                if stop(events[-1]) or event.kind in ("done", "end"):
                    break
        assert events and stop(events[-1]), events
        return events

    def finish(self, job_id: str) -> dict:
        """Follow to the end; the job as the store has it then."""
        self.follow(job_id)
        wait_for(lambda: self.job(job_id)["state"] in ("finished", "failed", "cancelled"), f"job {job_id} to end")
        return self.job(job_id)

    def cell(self, job_id: str, model: str, instance_id: str, attempt: int = 1) -> dict:
        response = self.get(f"/jobs/{job_id}/artifacts/cells/{model}/{instance_id}/{attempt}.json")
        assert response.status_code == 200, response.text
        return response.json()


def wait_for(check: Callable[[], bool], what: str, bound_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + bound_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


@contextmanager
def held_model(reply: str = "no idea") -> Iterator[tuple[FakeOpenAIServer, threading.Event, threading.Event]]:
    """A scripted model whose first chat request waits until `release` is set (`arrived` says it came)."""
    arrived, release = threading.Event(), threading.Event()

    def on_chat(number: int) -> None:
        if number == 1:
            arrived.set()
            release.wait(BOUND_S)

    with FakeOpenAIServer(default=ok(reply)) as server:
        server.on_chat = on_chat
        try:
            yield server, arrived, release
        finally:
            release.set()


def params_text(base_url: str, scripted_instances: tuple[str, ...] = TASKS[:1], name: str = "svc",
                models: str = "gold,empty,scripted") -> str:
    entries = {
        "gold": "  - {name: gold, kind: gold}\n",
        "empty": "  - {name: empty, kind: empty}\n",
        "scripted": (f"  - {{name: scripted, kind: patch, provider: vllm, model_id: scripted-model, "
                     f"base_url: '{base_url}', instances: [{', '.join(scripted_instances)}]}}\n"),
    }
    return (f"name: {name}\ndataset: minibench\ninstances: [{', '.join(TASKS)}]\nattempts: 1\nworkers: 1\n"
            "eval_workers: 2\nmodels:\n" + "".join(entries[m] for m in models.split(",")))


def gold_diff(instance_id: str) -> str:
    task = next(t for t in minibench.load_tasks() if t["instance_id"] == instance_id)
    return f"```diff\n{task['patch']}```"


def results_only(board: pd.DataFrame) -> pd.DataFrame:
    return board.drop(columns=[c for c in board.columns if TIMING.search(c)])


def library_leaderboard(params_file: Path, outputs: Path) -> pd.DataFrame:
    """The reference: the same params through the library's stages, as the notebooks call them."""
    params = load_params(params_file, overrides={"outputs_dir": str(outputs)})
    rows = resolve_instances(params)
    write_run_instances(params.run_dir, rows)
    generate(params, rows, progress=False)
    evaluate_run(params, progress=False)
    write_analysis(params.run_dir)
    return pd.read_csv(params.run_dir / "leaderboard.csv")


def raw_get(url: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """A GET sent exactly as written (httpx would remove the `..` segments before sending)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers=headers or AUTH)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    running = Service(root, root / "cache").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def predictions_job(service: Service, tmp_path_factory) -> dict:
    """An evaluation-only job: gold patches uploaded as SWE-bench predictions of 'uploaded-agent'."""
    rows = [{"instance_id": t["instance_id"], "model_name_or_path": "uploaded-agent", "model_patch": t["patch"]}
            for t in minibench.load_tasks() if t["instance_id"] in TASKS]
    body = "".join(json.dumps(row) + "\n" for row in rows)
    response = service.post("/jobs", body, params={"predictions": "preds.jsonl"})
    assert response.status_code == 201, response.text
    job = response.json()
    return {**job, "final": service.finish(job["job_id"]), "body": body}


# ---------------------------------------------------------------- access and policy


def test_every_route_but_health_needs_the_token(service: Service, predictions_job: dict) -> None:
    job_id = predictions_job["job_id"]
    assert httpx.get(f"{service.url}/health", timeout=30).json() == {"status": "ok"}
    for method, path in (("GET", "/jobs"), ("GET", f"/jobs/{job_id}"), ("DELETE", f"/jobs/{job_id}"),
                         ("GET", f"/jobs/{job_id}/events"), ("GET", f"/jobs/{job_id}/files"),
                         ("GET", f"/jobs/{job_id}/artifacts/leaderboard.csv"), ("POST", "/jobs")):
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}):
            response = httpx.request(method, service.url + path, headers=headers, content=b"name: x", timeout=30)
            assert response.status_code == 401, (method, path, headers, response.text)
    page = httpx.get(f"{service.url}/", timeout=30)
    assert page.status_code == 401 and "<form" in page.text and predictions_job["run_id"] not in page.text
    logs = [service.log, *service.outputs.glob(".service/jobs/*/worker.log")]
    assert len(logs) > 1 and not [log for log in logs if TOKEN in log.read_text()]


@pytest.mark.parametrize("document, field", [
    ("name: x\noutputs_dir: /tmp/elsewhere\nmodels: [{name: gold, kind: gold}]\n", "outputs_dir"),
    ("name: x\ninstances: /etc/ids.jsonl\nmodels: [{name: gold, kind: gold}]\n", "instances"),
    ("name: x\ninclude_models: [/etc/hostname]\nmodels: [{name: gold, kind: gold}]\n", "include_models[0]"),
    ("name: x\nmodels: [{name: i, kind: import, options: {path: ../../../../etc/p.jsonl}}]\n",
     "models[0].options.path"),
    ("name: x\nmodels: [{name: m, kind: patch, provider: chutes, model_id: m, api_key_env: SWELAB_SERVICE_TOKEN}]\n",
     "models[0].api_key_env"),
    ("name: x\nmodels: [{name: m, kind: patch, provider: chutes, model_id: m, base_url: 'http://evil.test/v1'}]\n",
     "models[0].base_url"),
    ("name: x\ndataset: /etc\nmodels: [{name: gold, kind: gold}]\n", "dataset.source"),
    ("name: x\nrepo_sources: {a/b: 'file:///etc'}\nmodels: [{name: gold, kind: gold}]\n", "repo_sources.a/b"),
    ("name: x\nmodels: [{name: m, kind: gold, temperature: hot}]\n", "models[0].temperature"),
    ("- just\n- a list\n", "top level"),
])
def test_params_that_reach_outside_or_break_the_schema_are_refused(service: Service, document: str,
                                                                     field: str) -> None:
    response = service.post("/jobs", document, params={"filename": "bad.yaml"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert field in detail and str(service.root) not in detail  # names the field, not the server's folders


def test_the_path_policy_takes_paths_under_an_allowed_root_and_follows_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ids.jsonl").write_text(json.dumps({"instance_id": TASKS[0]}) + "\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "ids.jsonl").write_text(json.dumps({"instance_id": TASKS[0]}) + "\n")
    (project / "link.jsonl").symlink_to(outside / "ids.jsonl")
    for name, expected in (("ids.jsonl", None), ("link.jsonl", "instances")):
        params = load_params(write_params(project, f"name: x\ninstances: {name}\nmodels: [{{name: g, kind: gold}}]\n"))
        if expected is None:
            check_paths(local_paths(params), [project])
        else:
            with pytest.raises(Refused, match=expected):
                check_paths(local_paths(params), [project])


def test_the_store_is_sqlite_in_wal_mode_and_names_what_other_urls_need(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    assert store.journal_mode == "wal"
    with pytest.raises(StoreError, match="sqlite:///"):
        JobStore("mysql://db.example/jobs")
    # PostgreSQL (tests/test_service_store.py runs a real server): a refused connection never shows the password
    with pytest.raises(StoreError, match=r"postgresql://u:\*\*\*@127\.0\.0\.1:1/jobs") as refused:
        JobStore("postgresql://u:hunter2@127.0.0.1:1/jobs")
    assert "hunter2" not in str(refused.value)


def test_oversized_documents_and_uploads_get_413(service: Service) -> None:
    big_params = "name: big\nmodels: [{name: gold, kind: gold}]\n" + "#" * MAX_PARAMS
    assert service.post("/jobs", big_params).status_code == 413
    row = {"instance_id": TASKS[0], "model_name_or_path": "m", "model_patch": "x" * MAX_UPLOAD}
    response = service.post("/jobs", json.dumps(row) + "\n", params={"predictions": "preds.jsonl"})
    assert response.status_code == 413 and str(MAX_UPLOAD) in response.json()["detail"]
    chunked = service.post("/jobs", iter([b"{}" * (MAX_UPLOAD // 4)] * 3), params={"predictions": "p.jsonl"})
    assert chunked.status_code == 413  # no Content-Length: refused while reading


# ---------------------------------------------------------------- predictions and artifacts


def test_uploaded_predictions_are_evaluated(service: Service, predictions_job: dict) -> None:
    final = predictions_job["final"]
    assert final["state"] == "finished", final
    assert final["kind"] == "predictions" and final["cells"] == {"ok": 2}
    assert final["verdicts"] == {"graded": 2, "resolved": 2}
    (row,) = final["leaderboard"]
    assert row["model"] == "uploaded-agent" and row["resolved"] == 2
    again = service.post("/jobs", predictions_job["body"], params={"predictions": "preds.jsonl"})
    assert again.status_code == 201 and again.json()["run_id"] == predictions_job["run_id"]
    assert service.finish(again.json()["job_id"])["state"] == "finished"


def test_artifacts_are_served_from_the_run_folder_only(service: Service, predictions_job: dict) -> None:
    job_id = predictions_job["job_id"]
    run_dir = service.outputs / predictions_job["run_id"]
    secret = service.root / "outside-secret.txt"
    secret.write_text("top secret")
    (run_dir / "link-out.txt").symlink_to(secret)
    (run_dir / "dir-out").symlink_to(service.root)
    files = [f["path"] for f in service.get(f"/jobs/{job_id}/files").json()]
    assert "report.html" in files and "leaderboard.csv" in files
    assert not any(p.startswith(("link-out", "dir-out")) for p in files)
    assert service.get(f"/jobs/{job_id}/artifacts/leaderboard.csv").text.startswith("model,")
    report = service.get(f"/jobs/{job_id}/artifacts/report.html")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    prefix = f"/jobs/{job_id}/artifacts/"
    for path in ("../../outside-secret.txt", "..%2F..%2Foutside-secret.txt", "%2Fetc%2Fpasswd", "/etc/passwd",
                 "link-out.txt", "dir-out/outside-secret.txt", "cells/../../../outside-secret.txt"):
        status, body = raw_get(service.url, prefix + path)
        assert status == 403, (path, status, body[:200])
        assert b"top secret" not in body and b"root:" not in body
    assert raw_get(service.url, prefix + "no-such-file.txt")[0] == 404


# ---------------------------------------------------------------- the main flow: restart, identity, resubmission


def test_a_job_survives_a_restart_and_gives_the_librarys_leaderboard(tmp_path: Path, cache_dir: Path,
                                                                     monkeypatch) -> None:
    with held_model(gold_diff(TASKS[0])) as (model, arrived, release):
        (tmp_path / "project").mkdir()
        params_file = write_params(tmp_path / "project", params_text(model.base_url), name="svc.yaml")
        expected_run_id = load_params(params_file).run_id
        first = Service(tmp_path / "svc", cache_dir).start()
        try:
            response = first.post("/jobs", params_file.read_bytes(), params={"filename": "svc.yaml"})
            assert response.status_code == 201, response.text
            job_id, run_id = response.json()["job_id"], response.json()["run_id"]
            assert run_id == expected_run_id
            # workers: 1, so gold's and empty's cells are written before the scripted one starts (and is held)
            seen = first.follow_until(job_id, lambda e: e["_kind"] == "cell" and e["model"] == "empty"
                                      and e["instance_id"] == TASKS[1])[-1]["_id"]
            assert arrived.wait(BOUND_S), "the scripted model was never called"
            running = first.job(job_id)
            assert running["state"] == "running" and running["cells"] == {"ok": 4}
            before = {(m, i): first.cell(job_id, m, i)["finished_at"] for m in ("gold", "empty") for i in TASKS}
        finally:
            first.stop()  # mid-job: the worker goes with the service, the job stays `running` in the store
        release.set()  # the stopped worker's request is answered into the void
        second = Service(tmp_path / "svc", cache_dir, port=first.port).start()
        try:
            events = second.follow(job_id, after=seen)  # Last-Event-ID: from where the first stream stopped
            wait_for(lambda: second.job(job_id)["state"] == "finished", "the resumed job to finish")
            final = second.job(job_id)
            after = {(m, i): second.cell(job_id, m, i)["finished_at"] for m in ("gold", "empty") for i in TASKS}
            board = pd.read_csv(io.StringIO(second.get(f"/jobs/{job_id}/artifacts/leaderboard.csv").text))
            # resubmitted after it finished: a new job over the same run, nothing redone
            again = second.post("/jobs", params_file.read_bytes(), params={"filename": "svc.yaml"}).json()
            assert again["run_id"] == run_id and again["job_id"] != job_id and not again["existing"]
            again_events = second.follow(again["job_id"])
        finally:
            second.stop()
        # the reference: the same params through the library, with a fresh cache (verdicts of its own)
        monkeypatch.setenv("SWELAB_CACHE", str(tmp_path / "reference-cache"))
        reference = library_leaderboard(params_file, tmp_path / "reference")
    kinds = [e["_kind"] for e in events]
    assert "resumed" in kinds and kinds[-1] == "done" and events[-1]["state"] == "finished"
    resumed_at = kinds.index("resumed")
    plan = next(e for e in events[resumed_at:] if e["_kind"] == "plan")
    assert plan["cells"] == 5 and plan["reused"] == 4
    assert [(e["model"], e["instance_id"]) for e in events if e["_kind"] == "cell"] == [("scripted", TASKS[0])]
    assert final["state"] == "finished" and final["cells"] == {"ok": 5} and final["worker_starts"] == 2
    assert final["verdicts"] == {"graded": 5, "resolved": 3}
    assert after == before  # finished cells were not redone
    assert next(e for e in again_events if e["_kind"] == "plan")["reused"] == 5
    assert not [e for e in again_events if e["_kind"] == "cell"] and again_events[-1]["state"] == "finished"
    pd.testing.assert_frame_equal(results_only(board), results_only(reference))
    assert set(board["model"]) == {"gold", "empty", "scripted"}
    assert board.set_index("model").loc["scripted", "resolved"] == 1


# ---------------------------------------------------------------- cancel, dead workers


def test_cancel_stops_before_the_next_cell_and_keeps_finished_ones(service: Service) -> None:
    with held_model() as (model, arrived, release):
        document = params_text(model.base_url, scripted_instances=TASKS, name="cancel", models="gold,scripted")
        job_id = service.post("/jobs", document).json()["job_id"]
        assert arrived.wait(BOUND_S)
        asked = httpx.delete(f"{service.url}/jobs/{job_id}", headers=AUTH, timeout=60).json()
        assert asked["cancel_requested"] and asked["state"] == "running"
        release.set()  # the cell in flight finishes; the next one must not start
        final = service.finish(job_id)
    assert final["state"] == "cancelled"
    assert sum(final["cells"].values()) == 3  # gold x2 and the scripted cell that was running
    assert final["verdicts"]["graded"] == 0  # evaluation never started
    response = service.get(f"/jobs/{job_id}/artifacts/cells/scripted/{TASKS[1]}/1.json")
    assert response.status_code == 404
    assert len(model.chat_requests()) == 1


def test_a_job_whose_worker_died_says_so(service: Service) -> None:
    with held_model() as (_model, arrived, _release):
        document = params_text(_model.base_url, name="dies", models="gold,scripted")
        job_id = service.post("/jobs", document).json()["job_id"]
        assert arrived.wait(BOUND_S)
        pid = service.job(job_id)["worker_pid"]
        os.kill(pid, signal.SIGKILL)
        final = service.finish(job_id)
    assert final["state"] == "failed"
    assert "worker died" in final["error"] and "SIGKILL" in final["error"]


# ---------------------------------------------------------------- clients and the status page


def test_the_python_client_and_swelab_submit_follow_a_job(service: Service, tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    monkeypatch.setenv("SWELAB_SERVICE_TOKEN", TOKEN)
    params_file = write_params(tmp_path, params_text("http://127.0.0.1:9/v1", models="gold,empty"),
                               name="cli.yaml")
    assert cli_main(["submit", str(params_file), "--url", service.url]) == 0
    out = capsys.readouterr().out.splitlines()
    job_id = out[0].strip()
    assert out[1] == "finished" and any(line.split()[:1] == ["gold"] for line in out)
    with Client(service.url) as client:
        job = client.submit(params_file)
        assert job["run_id"] == load_params(params_file).run_id
        final = client.wait(job["job_id"])
        assert final["state"] == "finished"
        got = client.results(job_id, tmp_path / "copy")
    run_dir = service.outputs / job["run_id"]
    pd.testing.assert_frame_equal(got.cells, tidy.load_cells(run_dir))
    pd.testing.assert_frame_equal(got.attempts, tidy.attempt_table(run_dir))
    assert got.leaderboard is not None and set(got.leaderboard["model"]) == {"gold", "empty"}


def _page_dom(browser: str, url: str) -> str:
    """The status page as Chromium renders it after signing in through the page's own form."""
    with tempfile.TemporaryDirectory() as folder:
        sign_in = Path(folder) / "sign-in.html"
        sign_in.write_text(f'<form method="post" action="{url}/login"><input name="token" value="{TOKEN}">'
                           "</form><script>document.forms[0].submit()</script>")
        return chromium_dom(browser, sign_in.as_uri(), Path(folder) / "profile", budget_ms=10000)


def test_the_status_page_shows_a_job_until_it_finishes(service: Service, chromium: str) -> None:
    job_id = service.post("/jobs", params_text("http://127.0.0.1:9/v1", name="page", models="gold")).json()["job_id"]
    states = []

    def row():
        soup = BeautifulSoup(_page_dom(chromium, service.url), "html.parser")
        found = soup.select_one(f"tr#job-{job_id}")
        assert found is not None, soup.get_text()[:2000]
        states.append(found["data-state"])
        return found

    wait_for(lambda: row()["data-state"] == "finished", "the page to show the job finished")
    bar = row().select_one("progress")
    assert bar["value"] == bar["max"] and int(bar["max"]) > 0
    links = {a.get_text(): a["href"] for a in row().select("a")}
    assert links["report"] == f"/jobs/{job_id}/artifacts/report.html"
    assert service.get(links["report"]).status_code == 200
