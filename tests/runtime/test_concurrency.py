"""One Grounder shared by 8 threads: 400 requests give exactly the sequential results.

Requests mix file paths (different sizes, so different letterboxes), numpy arrays, PIL images and
texts (one over-long, which warns from inside the worker threads), so pre-processing, tokenisation,
inference and post-processing all run concurrently.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvg.core.tokenizer import TextTruncatedWarning
from lvg.errors import InputError
from lvg.runtime.grounder import Grounder
from tests.helpers.artifacts import make_image
from tests.helpers.micro_model import Micro

THREADS = 8
PER_THREAD = 50
TEXTS = ["the man on the left", "dog sitting on the green grass", "blue car", "small child with a yellow balloon",
         " ".join(["left most person holding an umbrella"] * 10)]



def _sources(d: Path, micro: Micro) -> list:
    tall = make_image(d / "tall.png", w=70, h=130, seed=7)
    small = make_image(d / "small.jpg", w=33, h=21, seed=8)
    arr = np.asarray(Image.open(make_image(d / "arr.png", w=150, h=150, seed=9)).convert("RGB"))
    pil = Image.fromarray(np.ascontiguousarray(arr[20:120, 10:60]))  # a decoded PIL image (shared, read-only)
    return [micro.image, tall, small, arr, pil]


def _requests(sources: list) -> list[tuple[int, int]]:
    """400 (source index, text index) pairs in an order that interleaves every combination."""
    n = THREADS * PER_THREAD
    return [(i % len(sources), (i // len(sources)) % len(TEXTS)) for i in range(n)]


def _run(g: Grounder, sources: list, req: tuple[int, int]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TextTruncatedWarning)
        return g.predict(sources[req[0]], TEXTS[req[1]])


# catch_warnings in _run is not thread-safe: a worker thread can restore the filters while another one's
# over-long text warns, so the expected truncation warning is also ignored for the whole test.
@pytest.mark.filterwarnings("ignore::lvg.core.tokenizer.TextTruncatedWarning")
def test_eight_threads_400_requests_equal_sequential(micro: Micro, tmp_path: Path) -> None:
    g = Grounder.load(micro.onnx, device="cpu")
    sources = _sources(tmp_path, micro)
    requests = _requests(sources)
    # Sequential answers: one call per distinct (image, text) pair, then a repeat of each, which must
    # be identical (so a request's sequential result is well defined and cheap to look up).
    pairs = sorted(set(requests))
    reference = {pair: _run(g, sources, pair) for pair in pairs}
    for pair in pairs:
        np.testing.assert_array_equal(_run(g, sources, pair).prob, reference[pair].prob)
    sequential = [reference[r] for r in requests]

    results: list = [None] * len(requests)
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        try:
            start.wait()  # all threads hit the Grounder at once
            for i in range(t, len(requests), THREADS):  # thread t serves every 8th request
                results[i] = _run(g, sources, requests[i])
        except BaseException as exc:  # surfaced below: a crash in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors
    assert sum(r is not None for r in results) == THREADS * PER_THREAD
    for i, (a, b) in enumerate(zip(sequential, results)):
        assert b.text == TEXTS[requests[i][1]]
        np.testing.assert_array_equal(a.prob, b.prob, err_msg=f"request {i}")
        np.testing.assert_array_equal(a.mask, b.mask, err_msg=f"request {i}")
        assert a.box == b.box and a.score == b.score
    # Different inputs really gave different answers (the comparison is not between constants).
    assert len(pairs) == len(sources) * len(TEXTS)
    assert len({r.prob.tobytes() for r in reference.values()}) == len(pairs)


def test_bad_requests_among_good_ones_do_not_disturb_them(micro: Micro, tmp_path: Path) -> None:
    # A service thread that gets a broken file raises its own InputError; the others are unaffected.
    g = Grounder.load(micro.onnx, device="cpu")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    expected = g.predict(micro.image, TEXTS[0]).prob
    outcomes: list = [None] * 40

    def worker(t: int) -> None:
        for i in range(t, 40, 4):
            try:
                if i % 3 == 0:
                    g.predict(broken, TEXTS[0])
                    outcomes[i] = "no error"
                elif i % 3 == 1:
                    g.predict(micro.image, "\u200b ")
                    outcomes[i] = "no error"
                else:
                    outcomes[i] = g.predict(micro.image, TEXTS[0]).prob
            except InputError as exc:
                outcomes[i] = exc
            except BaseException as exc:  # anything else is a failure
                outcomes[i] = ("unexpected", exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    for i, out in enumerate(outcomes):
        if i % 3 == 0:
            assert isinstance(out, InputError) and "broken.jpg" in str(out)
        elif i % 3 == 1:
            assert isinstance(out, InputError) and "text is empty" in str(out)
        else:
            np.testing.assert_array_equal(out, expected)


# The micro model reads 14 word pieces; one of TEXTS is longer, and that truncation is not what this tests.
@pytest.mark.filterwarnings("ignore::lvg.core.tokenizer.TextTruncatedWarning")
def test_torch_backend_shared_by_threads(micro: Micro) -> None:
    # The torch backend serialises run() with a lock; results must still match sequential calls.
    g = Grounder.load(micro.ckpt, device="cpu")
    texts = TEXTS[:4]
    sequential = [g.predict(micro.image, t).prob for t in texts]
    results: list = [None] * len(texts)

    def worker(t: int) -> None:
        for i in range(t, len(texts), 4):
            results[i] = g.predict(micro.image, texts[i]).prob

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    for a, b in zip(sequential, results):
        np.testing.assert_array_equal(a, b)
