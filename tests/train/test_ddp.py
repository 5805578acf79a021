"""Two processes under torchrun (gloo on CPU) against one process with the same global batch."""
import json
import os
import subprocess
import sys

from ..conftest import ROOT, TINY, run_cli

STEPS = 4
ARGS = ["--max-steps", str(STEPS), "--train.log_interval=1", "--train.eval_interval=2", "--json", *TINY]


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}, rows


def test_torchrun_two_processes_match_one(tmp_path, corpus_file):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp_run, single_run = tmp_path / "ddp", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "aigc", "train", "text", "--data", str(corpus_file), "--out", str(ddp_run), *ARGS]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    reports = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1, "only rank 0 reports"
    report = json.loads(reports[0])
    assert report["world"] == 2 and report["ranks_in_sync"] is True and report["step"] == STEPS

    res = run_cli("train", "text", "--data", str(corpus_file), "--out", str(single_run), *ARGS, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    ddp_losses, ddp_rows = _losses(ddp_run)
    single_losses, _ = _losses(single_run)
    assert sorted(ddp_losses) == list(range(1, STEPS + 1))
    assert len(ddp_rows) == len({(r["step"], "loss" in r) for r in ddp_rows}), "a row was logged twice"
    for step in ddp_losses:
        assert abs(ddp_losses[step] - single_losses[step]) < 1e-4 * max(1.0, single_losses[step])
    assert (ddp_run / "latest" / "model.safetensors").is_file()
