import json
import random

import pytest

from aigc.data.batching import TokenBatches, pack_by_tokens

from ..conftest import run_cli

LEXICON = {"the": "el", "cat": "gato", "dog": "perro", "eats": "come", "sees": "ve", "big": "grande",
           "small": "chico", "fish": "pez", "bird": "pájaro", "and": "y", "runs": "corre", "red": "rojo"}
TINY = ["--preset", "tiny", "--model.max_len=40", "--max-tokens", "400", "--dev_bleu_sentences=8",
        "--train.eval_interval=10", "--train.eval_batches=2", "--no-progress"]


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    rng = random.Random(0)
    words = list(LEXICON)
    lines = []
    for _ in range(400):
        en = [rng.choice(words) for _ in range(rng.randint(3, 8))]
        lines.append(" ".join(en) + "\t" + " ".join(LEXICON[w] for w in en))
    path = tmp_path_factory.mktemp("mt") / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory, tsv):
    out = tmp_path_factory.mktemp("mtruns") / "tiny"
    res = run_cli("train", "translate", "--data", str(tsv), "--out", str(out), "--max-steps", "30", *TINY)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def _last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_translate_eval_and_average(mt_run, tmp_path):
    res = run_cli("translate", "--model", str(mt_run), "the cat eats", "a dog", "--beam", "2", "--json",
                  "--batch-size", "1", "--workers", "2")
    assert res.returncode == 0, res.stderr
    out = _last_json(res.stdout)
    assert out["src"] == "en" and out["tgt"] == "es" and len(out["translations"]) == 2
    src = tmp_path / "in.txt"
    src.write_text("the cat eats\nthe dog runs\n")
    dest = tmp_path / "out.txt"
    res = run_cli("translate", "--model", str(mt_run), "--input", str(src), "--output", str(dest), "--beam", "1")
    assert res.returncode == 0 and len(dest.read_text().splitlines()) == 2
    res = run_cli("eval", "translate", "--model", str(mt_run), "--split", "test", "--beam", "2", "--json",
                  "--hypotheses", str(tmp_path / "hyp.txt"))
    assert res.returncode == 0, res.stderr
    score = _last_json(res.stdout)
    assert score["bleu_signature"].startswith("nrefs:1") and score["sentences"] >= 1
    assert (tmp_path / "hyp.txt").exists()
    res = run_cli("average", "--model", str(mt_run), "--last", "2", "--out", str(tmp_path / "avg"))
    assert res.returncode == 0, res.stderr
    res = run_cli("translate", "--model", str(tmp_path / "avg"), "the cat")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("args, message", [
    (["hi", "--src", "es", "--tgt", "en"], "translates en->es"),
    (["", "--beam", "2"], "line 1 is empty"),
    (["big " * 200], "more than this model reads"),
    (["hi", "--beam", "0"], "beam"),
    (["hi", "--workers", "0"], "workers"),
])
def test_bad_translate_input_exits_2_without_output(mt_run, tmp_path, args, message):
    dest = tmp_path / "out.txt"
    res = run_cli("translate", "--model", str(mt_run), "--output", str(dest), *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not dest.exists()


def test_bad_training_input(tmp_path, tsv):
    res = run_cli("train", "translate", "--data", "bible-en-es", "--src", "en", "--tgt", "fr",
                  "--out", str(tmp_path / "r"), *TINY)
    assert res.returncode == 2 and "en" in res.stderr and not (tmp_path / "r").exists()
    res = run_cli("translate", "--model", str(tmp_path / "nope"), "hi")
    assert res.returncode == 2
    res = run_cli("average", "--model", str(tmp_path / "nope"))
    assert res.returncode == 2


def test_token_batches_respect_the_budget_and_cover_every_pair():
    import numpy as np
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(1, 50, rng.integers(1, 30)), rng.integers(1, 50, rng.integers(1, 30))) for _ in range(500)]
    src_lens = np.array([len(s) for s, _ in pairs])
    tgt_lens = np.array([len(t) + 1 for _, t in pairs])
    batches = pack_by_tokens(src_lens, tgt_lens, 300, seed=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    for b in batches:
        assert len(b) * (src_lens[b].max() + tgt_lens[b].max()) <= 300
    source = TokenBatches(pairs, 300, seed=1, pad_id=0, bos_id=0, eos_id=0)
    whole = source.batch(7)
    halves = [source.batch(7, p, 2) for p in range(2)]
    assert whole[0].size(0) == halves[0][0].size(0) + halves[1][0].size(0)
    src, tgt_in, tgt_out = whole
    assert (tgt_in[:, 0] == 0).all() and ((tgt_out == -100) | (tgt_out >= 0)).all()


def test_torchrun_trains_the_translator_with_two_processes(tmp_path, tsv):
    import os
    import subprocess
    import sys

    from ..conftest import ROOT

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "aigc",
           "train", "translate", "--data", str(tsv), "--out", str(tmp_path / "ddp"), "--max-steps", "4", "--json",
           *TINY]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    report = _last_json(res.stdout)
    assert report["world"] == 2 and report["ranks_in_sync"] is True and report["step"] == 4
