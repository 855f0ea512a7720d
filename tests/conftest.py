"""Shared fixtures: a small Ganjoor-schema corpus made from the Hafez divan of the `hafez` PyPI
package (MIT; no network, no ../shared), and a tiny model trained on it by our own `train`."""

from __future__ import annotations

import gzip
import importlib.util
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

RUBAI = "مفعول مفاعیل مفاعیل فعل (وزن رباعی)"
RAMAL = "فاعلاتن فاعلاتن فاعلاتن فاعلن (رمل مثمن محذوف)"


def hafez_ghazals() -> list[list[str]]:
    spec = importlib.util.find_spec("hafez")  # finds the package without importing it (it needs pandas)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the test extra is needed: pip install -e '.[test]' (it brings the hafez divan)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "hafez.json"
    return [entry["poem"] for entry in json.loads(path.read_text(encoding="utf-8"))]


def ganjoor_record(poem_id: int, poet: str, hemistichs: list[str], form: str = "Ghazal",
                   metre: tuple[int, str] | None = (3, RAMAL), rhyme: str | None = "ها") -> dict:
    verses = [{"Position": "Right" if i % 2 == 0 else "Left", "CoupletIndex": i // 2, "Text": text}
              for i, text in enumerate(hemistichs)]
    return {"Id": poem_id, "Poet": poet, "PoetName": poet, "FullUrl": f"/{poet}/{poem_id}",
            "FullTitle": poet, "PoemFormat": form,
            "Metre": {"Id": metre[0], "Rhythm": metre[1]} if metre else None,
            "RhymeLetters": rhyme, "Verses": verses}


@pytest.fixture(scope="session", autouse=True)
def _a_cache_of_its_own(tmp_path_factory):
    """The suite caches what it derives (`files.cache_root`) in a folder of its own, never in the
    user's ~/.cache; commands it runs in subprocesses inherit the setting."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSIAN_POETRY_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def corpus_path(tmp_path_factory) -> Path:
    """400 poems: Hafez's ghazals under two poet names and three forms, as .jsonl.gz."""
    ghazals = hafez_ghazals()
    records = []
    for i, hemistichs in enumerate(ghazals[:400]):
        poet = "hafez" if i % 2 == 0 else "saadi"
        if i % 5 == 0:
            records.append(ganjoor_record(i + 1, poet, hemistichs[:4], "Robaee", (24, RUBAI), None))
        else:
            records.append(ganjoor_record(i + 1, poet, hemistichs))
    path = tmp_path_factory.mktemp("corpus") / "poems.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def tiny_config(corpus: Path, out_dir: Path, **overrides):
    from persian_poetry.gpt.config import TrainConfig

    values = dict(data=str(corpus), out_dir=str(out_dir), poets="all", tokenizer="char", n_layer=2, n_head=2,
                  n_embd=32, context_length=64, batch_size=8, learning_rate=3e-3, min_learning_rate=3e-4,
                  warmup_steps=5, max_steps=30, eval_interval=10, eval_poems=5, checkpoint_interval=10,
                  seed=7, progress=False, cache_dir=str(out_dir / "cache"))
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def tiny_model_dir(corpus_path, tmp_path_factory) -> Path:
    from persian_poetry.gpt.train import train

    out = tmp_path_factory.mktemp("tiny")
    train(tiny_config(corpus_path, out), command_line=["test"])
    return out / "model"


@pytest.fixture(scope="module")
def client(poetry):
    """A TestClient of the app around the requesting module's `poetry` fixture (the server tests')."""
    from fastapi.testclient import TestClient

    from persian_poetry.serve.app import create_app

    with TestClient(create_app(poetry), base_url="http://localhost") as c:  # the server checks Host
        yield c


def untrained_poetry(**architecture):
    """A tiny untrained GPT (seeded) with the shipped tokenizer, controls and metre names: the
    server's and the API's tests get real poem structure at the cost of no training.
    `architecture`: GPTConfig options (e.g. positional="rotary")."""
    import torch

    from persian_poetry.assets import DEFAULT_MODEL_DIR
    from persian_poetry.data.tokenizer import load_tokenizer
    from persian_poetry.gpt.model import GPT, GPTConfig
    from persian_poetry.writing.bundle import PoetryModel

    tokenizer = load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, n_layer=2, n_head=2, n_embd=32,
                          **architecture)).eval()
    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text(encoding="utf-8"))
    metres = {int(k): v for k, v in config["metres"].items()}
    return PoetryModel(inference_of(model), tokenizer, metres)


def inference_of(model):
    """The numpy network that writing runs on (`gpt.inference.InferenceGPT`) with the weights of a
    PyTorch `GPT`: tests build and train small models in PyTorch and write with them."""
    from persian_poetry.gpt.inference import InferenceGPT

    return InferenceGPT(model.config, {name: t.detach().float().numpy() for name, t in model.state_dict().items()})


def wait_until(predicate, what: str, seconds: float = 120.0):
    """Poll `predicate` until it gives a true value, and return that. The limit only guards against
    a hang: CI machines run this suite up to three times slower than a quiet laptop."""
    deadline = time.monotonic() + seconds
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"waited {seconds:.0f} s for {what}"
        time.sleep(0.05)
    return value


@contextmanager
def live_server(app):
    """The app under uvicorn on a free loopback port, in a thread; yields the port. (TestClient
    cannot show concurrency, raw HTTP or a client hanging up: it runs each request to the end.)"""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning")
    config.load()  # its imports happen here, outside the wait below (on CI the wait once ran past 30 s)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "the server to start")
    assert server.started, "the server thread ended before it started serving"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def live_url(app):
    """`live_server`, as the server's base URL."""
    with live_server(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (a GRU's backward pass on threads that share a busy core crawls)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# One couplet each of Hafez, Saadi, Rumi, Ferdowsi, Khayyam and Hafez again, one hemistich a line.
FAMOUS_COUPLETS = [
    "الا یا ایها الساقی ادر کاسا و ناولها\nکه عشق آسان نمود اول ولی افتاد مشکل‌ها",
    "بنی آدم اعضای یکدیگرند\nکه در آفرینش ز یک گوهرند",
    "بشنو این نی چون شکایت می‌کند\nاز جدایی‌ها حکایت می‌کند",
    "توانا بود هر که دانا بود\nز دانش دل پیر برنا بود",
    "این قافله عمر عجب می‌گذرد\nدریاب دمی که با طرب می‌گذرد",
    "دوش دیدم که ملایک در میخانه زدند\nگل آدم بسرشتند و به پیمانه زدند",
]
