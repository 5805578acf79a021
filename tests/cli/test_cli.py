import json

import pytest

from ..conftest import TINY, run_cli


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_generate_eval_and_data_list(trained_run):
    res = run_cli("generate", "text", "--model", str(trained_run), "the cat", "a dog", "--max-new-tokens", "12",
                  "--seed", "0", "--json")
    assert res.returncode == 0, res.stderr
    out = _last_json(res.stdout)
    assert out["prompts"] == ["the cat", "a dog"] and len(out["outputs"]) == 2
    again = _last_json(run_cli("generate", "text", "--model", str(trained_run), "the cat", "a dog",
                               "--max-new-tokens", "12", "--seed", "0", "--json").stdout)
    assert again["outputs"] == out["outputs"]

    res = run_cli("generate", "text", "--model", str(trained_run), "the", "--max-new-tokens", "10",
                  "--temperature", "0", "--stream")
    assert res.returncode == 0 and res.stdout.startswith("the")

    res = run_cli("eval", "text", "--model", str(trained_run), "--json")
    assert res.returncode == 0, res.stderr
    score = _last_json(res.stdout)
    assert score["unit"] == "char" and score["tokens"] > 100
    assert score["perplexity"] == pytest.approx(2.718281828 ** score["loss"], rel=1e-6)

    res = run_cli("data", "list", "--json")
    names = {d["name"] for d in _last_json(res.stdout)["datasets"]}
    assert {"fortunes", "bible-en", "fortunes-zh", "python-code"} <= names


def test_train_json_reports_and_refuses_to_overwrite(tmp_path, corpus_file):
    out = tmp_path / "run"
    res = run_cli("train", "text", "--data", str(corpus_file), "--out", str(out), "--max-steps", "3", "--json", *TINY)
    assert res.returncode == 0, res.stderr
    assert _last_json(res.stdout)["step"] == 3
    res = run_cli("train", "text", "--data", str(corpus_file), "--out", str(out), "--max-steps", "3", *TINY)
    assert res.returncode == 2 and "--resume" in res.stderr
    res = run_cli("train", "text", "--out", str(out), "--resume", "--max-steps", "5", "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert _last_json(res.stdout)["step"] == 5


@pytest.mark.parametrize("args, message", [
    (["--data", "/no/such/file.txt"], "existing file"),
    (["--data", "no-such-dataset"], "known text data set"),
    (["--bogus", "3"], "unknown option"),
    (["--model.nlayers=3"], "unknown option"),
    (["--preset", "huge"], "unknown preset"),
    (["--train.lr=abc"], "expects float"),
    (["--max-minutes", "-1"], "must be positive"),
])
def test_bad_training_input_exits_2_and_writes_nothing(tmp_path, corpus_file, args, message):
    out = tmp_path / "run"
    base = ["train", "text", "--out", str(out), "--max-steps", "2", "--no-progress"]
    if "--data" not in args:
        base += ["--data", str(corpus_file)]
    res = run_cli(*base, *args)
    assert res.returncode == 2
    assert message in res.stderr.lower() or message in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()


def test_empty_corpus_is_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    res = run_cli("train", "text", "--data", str(empty), "--out", str(tmp_path / "run"), "--no-progress")
    assert res.returncode == 2 and "empty" in res.stderr.lower()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-0.5"], "temperature"),
    (["--top-p", "0"], "top_p"),
    (["--top-p", "1.5"], "top_p"),
    (["--top-k", "0"], "top_k"),
    (["--num-samples", "0"], "num-samples"),
    (["--max-new-tokens", "-3"], "max_new_tokens"),
])
def test_bad_generation_options_exit_2(trained_run, args, message):
    res = run_cli("generate", "text", "--model", str(trained_run), "hi", *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


def test_corrupt_or_foreign_checkpoint_exits_2(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    for model in (foreign, tmp_path / "missing"):
        res = run_cli("generate", "text", "--model", str(model), "hi")
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    res = run_cli("eval", "text", "--model", str(foreign))
    assert res.returncode == 2


def test_unknown_command_exits_2():
    res = run_cli("train", "music")
    assert res.returncode == 2
