"""`workers: auto`: generation workers scale down while the CPU stays above 80 % and back up with headroom.
The CPU readings are synthetic (a CPU-heavy neighbour is a reading of 95 %), so nothing depends on the machine."""

from __future__ import annotations

import threading

from scaffold import write_params

from swelab.generate import autoscale, runner
from swelab.io import read_json, write_jsonl
from swelab.params import load_params


def readings(*values: float):
    """A read_cpu that replays values (the last one repeats)."""
    queue = list(values)

    def read() -> float:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return read


def test_sustained_high_cpu_scales_down_and_headroom_scales_back_up_to_the_start():
    scaler = autoscale.WorkerScaler(12, read_cpu=readings(95, 95, 95, 95, 95, 95, 50, 50, 50, 95, 30),
                                    interval_s=0)
    counts = [scaler.sample() for _ in range(6)]
    assert counts == [12, 12, 9, 9, 9, 7]  # down by a quarter after 3 readings above 80 in a row
    assert [scaler.sample() for _ in range(3)] == [7, 7, 8]  # headroom: +1 after 3 below 60
    assert scaler.sample() == 8  # one high reading is not "stays above"
    for _ in range(30):
        scaler.sample()
    assert scaler.workers == 12  # never above the configured count
    reasons = [entry["reason"] for entry in scaler.timeline]
    assert reasons[:4] == ["start", "cpu_high", "cpu_high", "headroom"]
    assert scaler.timeline[1]["cpu_percent"] == 95 and scaler.timeline[1]["workers"] == 9


def test_the_floor_is_one_worker_and_a_lower_capacity_holds_back_the_next_attempt():
    scaler = autoscale.WorkerScaler(2, read_cpu=readings(99), interval_s=3600)  # one reading, then none
    assert scaler.acquire(timeout=5)  # the first reading (99 %) happens here: one of three
    for _ in range(5):
        scaler.sample()
    assert scaler.workers == 1
    entered = threading.Event()

    def second() -> None:
        if scaler.acquire(timeout=30):
            entered.set()
            scaler.release()

    thread = threading.Thread(target=second)
    thread.start()
    assert not entered.wait(0.3)  # held back while the one allowed attempt runs
    scaler.release()
    assert entered.wait(30)  # and let in as soon as it ends
    thread.join(timeout=30)
    assert scaler.running == 0


def test_proc_stat_reading_is_busy_over_total(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 ...\n")
    read = autoscale.ProcStatCPU(stat)
    stat.write_text("cpu  190 0 100 810 0 0 0 0 0 0\ncpu0 ...\n")  # 90 busy of 100 jiffies
    assert read() == 90.0


def test_workers_auto_scales_the_run_down_under_a_cpu_heavy_neighbour(tmp_path, toy_repo, cache_dir, monkeypatch):
    repo, instance = toy_repo
    rows = [dict(instance, instance_id=f"toy__toy-{i}") for i in (1, 2, 3)]
    write_jsonl(tmp_path / "toy.jsonl", rows)
    path = write_params(tmp_path, f"name: auto\ndataset: {tmp_path / 'toy.jsonl'}\nattempts: 2\nworkers: auto\n"
                        f"repo_sources: {{toy/toy: {repo}}}\nmodels:\n  - {{name: gold, kind: gold}}\n"
                        "  - {name: empty, kind: empty}\n", "auto.yaml")
    params = load_params(path, environ={"WORKERS": "8"})
    assert (params.workers, params.workers_auto) == (8, True)
    monkeypatch.setattr(autoscale, "default_read_cpu", lambda: readings(97))
    monkeypatch.setattr(autoscale, "SAMPLE_INTERVAL_S", 0.0)  # a reading at every attempt start and end
    summary = runner.generate(params, rows, progress=False)
    assert summary["by_status"] == {"ok": 12}
    workers = read_json(params.run_dir / "manifest.json")["workers"]
    assert workers["auto"] is True and workers["start"] == 8
    counts = [entry["workers"] for entry in workers["timeline"]]
    assert counts[0] == 8 and min(counts) < 8 and counts == sorted(counts, reverse=True)
    assert {entry["reason"] for entry in workers["timeline"][1:-1]} == {"cpu_high"}
    assert autoscale.workers_timeline({"workers": workers}) == workers["timeline"]
