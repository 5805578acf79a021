import copy
import random
import threading

import pytest
import torch

from aigc.errors import ConfigError
from aigc.generate.continuous import ContextTooLong, ContinuousBatcher, TextEvent
from aigc.generate.text import GenerationConfig, generate_text
from aigc.tokenizers import train_tokenizer

from ..conftest import make_text, tiny_gpt

BLOCK = 64
GREEDY = GenerationConfig(max_new_tokens=30, temperature=0.0, stop_at_eos=False)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer("char", make_text(10))


@pytest.fixture(scope="module", params=["learned", "rotary"])
def model(request, tok):
    return tiny_gpt(pos=request.param, vocab=tok.vocab_size, block=BLOCK)


@pytest.fixture
def batcher(model, tok):
    b = ContinuousBatcher(model, tok)
    yield b
    b.close()


class Sink:
    """Collects a request's events; ``then(n, fn)`` calls fn at the n-th text event (or at the end)."""

    def __init__(self, then: tuple[int, callable] | None = None) -> None:
        self.events: list[TextEvent] = []
        self.ended = threading.Event()
        self._then = then

    def __call__(self, event: TextEvent) -> None:
        self.events.append(event)
        if self._then and (event.kind != "text" or sum(e.kind == "text" for e in self.events) >= self._then[0]):
            fn, self._then = self._then[1], None
            fn()
        if event.kind != "text":
            self.ended.set()

    def wait(self) -> TextEvent:
        assert self.ended.wait(20), "no terminal event"
        assert [e.kind for e in self.events[:-1]] == ["text"] * (len(self.events) - 1)
        return self.events[-1]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if e.kind == "text")


def test_staggered_greedy_requests_match_generating_each_alone(batcher, model, tok):
    prompts = ["a", "the cat sat on the mat while the", "x", "Dog ran far and fast over", "", "quick brown",
               "Moon star light dark quick fox.", "by", "old new good bad"]
    compactions = []
    compact = batcher._compact
    batcher._compact = lambda: compactions.append(1) or compact()
    sinks: list[Sink] = []

    def submit(i: int) -> None:  # each request brings in the next one after 12 pieces of its text
        sinks.append(Sink((12, lambda: submit(i + 1)) if i + 1 < len(prompts) else None))
        batcher.submit(prompts[i], GREEDY, sinks[i])

    submit(0)
    for i, p in enumerate(prompts):
        while len(sinks) <= i:
            sinks[-1].ended.wait(20)
        end = sinks[i].wait()
        assert (end.kind, end.finish_reason, end.completion_tokens) == ("done", "length", 30)
        assert end.prompt_tokens == batcher.count_tokens(p)
        assert sinks[i].text == generate_text(model, tok, [p], GREEDY)[0], p
    stats = batcher.stats()
    assert stats["multi_row_steps"] > 0 and stats["steps"] < 30 * len(prompts)
    assert compactions  # the write column wrapped around the cache's capacity
    assert stats["running"] == stats["waiting"] == 0


def test_seeded_sample_is_the_same_alone_and_alongside_others(batcher, model, tok):
    cfg = GenerationConfig(max_new_tokens=30, temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.3,
                           seed=7, stop_at_eos=False)
    alone = Sink()
    batcher.submit("the fox", cfg, alone)
    alone.wait()
    assert alone.text == generate_text(model, tok, ["the fox"], cfg)[0]

    target = Sink()
    others = [Sink((3 + 2 * i, (lambda: batcher.submit("the fox", cfg, target)) if i == 0 else None))
              for i in range(3)]
    for i, sink in enumerate(others):
        batcher.submit("over the hill " * i, GenerationConfig(max_new_tokens=25, seed=i, temperature=1.5), sink)
    for sink in others + [target]:
        sink.wait()
    assert target.text == alone.text
    assert batcher.stats()["multi_row_steps"] > 0


def test_stop_strings_length_and_eos(batcher, model, tok):
    free = Sink()
    batcher.submit("the", GREEDY, free)
    free.wait()
    stop = free.text[5:7]
    cfg = GenerationConfig(max_new_tokens=30, temperature=0.0, stop=[stop])
    cut = Sink()
    batcher.submit("the", cfg, cut)
    end = cut.wait()
    assert cut.text == free.text[:free.text.index(stop)] == generate_text(model, tok, ["the"], cfg)[0]
    assert end.finish_reason == "stop" and end.completion_tokens < 30

    short = Sink()
    batcher.submit("the", GenerationConfig(max_new_tokens=4, temperature=0.0), short)
    assert (short.wait().finish_reason, short.events[-1].completion_tokens) == ("length", 4)
    none = Sink()
    batcher.submit("the", GenerationConfig(max_new_tokens=0), none)
    assert (none.wait().finish_reason, none.text) == ("length", "")

    eos_model = copy.deepcopy(model)  # a model that always says end-of-text
    with torch.no_grad():
        eos_model.ln_f.weight.zero_()
        eos_model.ln_f.bias.copy_(eos_model.wte.weight[tok.eos_id] * 1e4)
    eos_batcher = ContinuousBatcher(eos_model, tok)
    try:
        sink = Sink()
        eos_batcher.submit("the", GenerationConfig(max_new_tokens=10, seed=0), sink)
        end = sink.wait()
        assert (end.finish_reason, end.completion_tokens, sink.text) == ("stop", 1, "")
    finally:
        eos_batcher.close()


def test_a_request_joins_the_running_batch(batcher):
    second = Sink()
    first = Sink((1, lambda: batcher.submit("a", GREEDY, second)))
    batcher.submit("the cat", GREEDY, first)
    first.wait()
    second.wait()
    stats = batcher.stats()
    assert stats["multi_row_steps"] >= 25 and stats["tokens"] == 60 and stats["steps"] < 58


def test_cancel_running_and_waiting(model, tok):
    b = ContinuousBatcher(model, tok, max_batch=1)
    try:
        reached, gate = threading.Event(), threading.Event()
        running = Sink((3, lambda: (reached.set(), gate.wait(10))))
        req = b.submit("the", GREEDY, running)
        assert reached.wait(10)
        waiting = Sink()
        b.submit("a", GREEDY, waiting).cancel()
        req.cancel()
        gate.set()
        end = running.wait()
        assert end.finish_reason == "cancelled" and 3 <= end.completion_tokens < 30
        assert (waiting.wait().finish_reason, waiting.events[-1].completion_tokens) == ("cancelled", 0)
        after = Sink()
        b.submit("a", GREEDY, after)
        assert after.wait().finish_reason == "length"
    finally:
        b.close()


def test_context_too_long(batcher):
    assert batcher.context == BLOCK and batcher.count_tokens("") == 1 and batcher.count_tokens("abc") == 3
    with pytest.raises(ContextTooLong, match=r"maximum context length is 64 tokens, however you requested "
                                             r"70 tokens \(60 in the prompt, 10 for the completion\)"):
        batcher.submit("a" * 60, GenerationConfig(max_new_tokens=10), Sink())
    assert issubclass(ContextTooLong, ConfigError)
    ok = Sink()
    batcher.submit("a" * 54, GenerationConfig(max_new_tokens=10, temperature=0), ok)  # exactly fits
    assert ok.wait().completion_tokens == 10


def test_close_ends_pending_requests(model, tok):
    b = ContinuousBatcher(model, tok, max_batch=1)
    sinks = [Sink() for _ in range(5)]
    for s in sinks:
        b.submit("the", GREEDY, s)
    b.close()
    ends = [s.wait() for s in sinks]
    assert all(e.kind == "done" for e in ends) and ends[-1].finish_reason == "cancelled"
    with pytest.raises(RuntimeError):
        b.submit("the", GREEDY, Sink())


def test_an_error_fails_its_requests_and_the_engine_goes_on(batcher, model):
    forward = model.forward
    fail = {"once": True}

    def flaky(idx, **kw):
        if idx.size(1) == 1 and fail.pop("once", False):
            raise RuntimeError("device lost")
        return forward(idx, **kw)

    model.forward = flaky
    try:
        bad, good = Sink(), Sink()
        batcher.submit("the", GREEDY, bad)
        assert (bad.wait().kind, bad.events[-1].error) == ("error", "device lost")
        batcher.submit("the", GREEDY, good)
        assert good.wait().finish_reason == "length"
    finally:
        del model.forward


def test_many_concurrent_submits(batcher, model, tok):
    rng = random.Random(0)
    jobs = [(rng.choice(["", "a", "the cat", "over the hill by"]),
             GenerationConfig(max_new_tokens=rng.randint(1, 20), temperature=rng.choice([0.0, 1.0]),
                              seed=i, stop_at_eos=False)) for i in range(20)]
    sinks = [Sink() for _ in jobs]
    threads = [threading.Thread(target=batcher.submit, args=(*job, sink)) for job, sink in zip(jobs, sinks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (prompt, cfg), sink in zip(jobs, sinks):
        end = sink.wait()
        assert (end.finish_reason, end.completion_tokens) == ("length", cfg.max_new_tokens)
        assert sum(e.kind != "text" for e in sink.events) == 1
        if cfg.greedy:
            assert sink.text == generate_text(model, tok, [prompt], cfg)[0]
    assert batcher.stats()["tokens"] == sum(cfg.max_new_tokens for _, cfg in jobs)
