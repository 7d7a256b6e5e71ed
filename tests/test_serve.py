"""The HTTP API in process (FastAPI's TestClient, httpx's ASGI transport: no sockets) and
``hlrm serve`` as a user starts it."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from cli_helpers import interruptible
from hlrm import runs
from serve_helpers import random_run, trained_run_dir
from test_console_script import SCRIPT, run_script

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from hlrm.serving.app import Batching, Limits, create_app  # noqa: E402


@pytest.fixture(scope="module")
def hlr_run():
    return random_run("hlr", dim=8, n_slots=4, history_size=6)


@pytest.fixture(scope="module")
def client(hlr_run):
    with TestClient(create_app(hlr_run, limits=Limits(max_items=20, body_bytes=2048))) as client:
        yield client


def user_id(run, index: int) -> str:
    return str(run.split.user_ids[index])


def item_id(run, index: int) -> str:
    return str(run.split.item_ids[index])


def test_recommendations_with_explanations(client, hlr_run):
    user = user_id(hlr_run, 3)
    response = client.get("/recommend", params={"user": user, "k": 5, "explain": "true"})
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == user and body["model"] == "hlr"
    expected = runs.recommend_many(hlr_run, [user], k=5, explain=True)[0]
    assert [row["item_id"] for row in body["items"]] == [r.item_id for r in expected]
    assert [row["rank"] for row in body["items"]] == [1, 2, 3, 4, 5]
    history = set(hlr_run.split.item_ids[hlr_run.split.everything[3].indices].astype(str))
    for row in body["items"]:
        assert row["item_id"] not in history
        assert row["title"].startswith("Item ")
        attention = row["explanation"]["user_attention"]
        assert attention and all(
            entry.get("slot") == "user" or entry["item_id"] in history for entry in attention
        )
    plain = client.get("/recommend", params={"user": user, "k": 5}).json()
    assert all(row["explanation"] is None for row in plain["items"])
    # every field of a Recommendation but the internal index, and nothing else
    fields = {field.name for field in dataclasses.fields(runs.Recommendation)} - {"item"}
    assert all(set(row) == fields for row in body["items"] + plain["items"])
    assert [row["score"] for row in plain["items"]] == [r.score for r in expected]


@pytest.mark.parametrize(
    "params, status, fragment",
    [
        ({"user": "no-such-user"}, 404, "unknown user id"),
        ({"user": "0", "k": 0}, 422, "greater than or equal to 1"),
        ({"user": "0", "k": 101}, 422, "less than or equal to 100"),
        ({"user": "0", "k": "ten"}, 422, "integer"),
        ({"user": "x" * 201}, 422, "at most 200"),
        ({}, 422, "Field required"),
    ],
)
def test_bad_recommend_requests_get_json_errors(client, params, status, fragment):
    response = client.get("/recommend", params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert fragment in json.dumps(response.json()["detail"])


def test_new_user_by_items(client, hlr_run):
    given = [item_id(hlr_run, i) for i in (1, 11, 21)]
    response = client.post("/recommend", json={"items": given, "k": 4, "explain": True})
    assert response.status_code == 200, response.text
    rows = response.json()["items"]
    assert len(rows) == 4 and not {row["item_id"] for row in rows} & set(given)
    assert rows[0]["explanation"]["user_attention"]


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"items": ["no-such-item", "nor-this"]}, 404, "unknown item ids 'no-such-item', 'nor"),
        ({"items": []}, 422, "at least 1"),
        ({"items": [str(i) for i in range(21)]}, 422, "at most 20"),
        ({"items": ["1"], "k": 1000}, 422, "less than or equal to 100"),
        ({"items": [{"$ne": 1}]}, 422, "string"),
        ({"user": "3"}, 422, "Field required"),
    ],
)
def test_bad_new_user_requests(client, body, status, fragment):
    response = client.post("/recommend", json=body)
    assert response.status_code == status, response.text
    assert fragment in json.dumps(response.json()["detail"])


def test_malformed_and_oversized_bodies(client):
    response = client.post(
        "/recommend", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    big = json.dumps({"items": ["1"] * 1000}).encode()
    response = client.post("/recommend", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "over the limit of 2048 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit still holds while streaming
        for _ in range(100):
            yield b" " * 100

    response = client.post(
        "/recommend", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    response = client.post(
        "/recommend", content=b"{}", headers={"content-length": "-5", "content-type": "text/x"}
    )
    assert response.status_code in (400, 413)


def test_similar_items(client, hlr_run):
    item = item_id(hlr_run, 7)
    response = client.get("/similar-items", params={"item": item, "k": 6})
    assert response.status_code == 200
    rows = response.json()["items"]
    assert len(rows) == 6 and item not in {row["item_id"] for row in rows}
    expected = runs.similar_items(hlr_run, [item], k=6)[0]
    assert [row["item_id"] for row in rows] == [r.item_id for r in expected]
    assert client.get("/similar-items", params={"item": "nope"}).status_code == 404


def test_item_search(client, hlr_run):
    rows = client.get("/items", params={"query": "GROUP 3", "limit": 50}).json()["items"]
    assert rows and all("group 3" in row["title"] for row in rows)
    popularity = [row["popularity"] for row in rows]
    assert popularity == sorted(popularity, reverse=True)
    exact = item_id(hlr_run, 12)
    assert client.get("/items", params={"query": exact}).json()["items"][0]["item_id"] == exact
    top = client.get("/items", params={"limit": 3}).json()["items"]
    assert [row["popularity"] for row in top] == sorted(hlr_run.split.item_popularity)[::-1][:3]
    assert client.get("/items", params={"limit": 0}).status_code == 422


def test_health_model_openapi_and_page(client):
    assert client.get("/health").json() == {"status": "ok", "model": "hlr"}
    info = client.get("/model").json()
    assert info["model"] == "hlr" and info["dataset"] == "synthetic" and info["explains"]
    assert info["retrieval"] == "exact" and info["batching"]["enabled"]
    assert info["metrics"] == {"ndcg@10": 0.5} and len(info["example_users"]) == 20
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/similar-items", "/items", "/health", "/model"} <= set(paths)
    docs = client.get("/docs").text  # Swagger UI from local files: it works offline
    assert "/docs/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/favicon.png"):
        assert client.get(asset).status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<title>hlrm" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    for path in ("/static/../../etc/passwd", "/static/%2e%2e/serving/app.py", "/static/x.js"):
        assert client.get(path).status_code == 404


def test_concurrent_requests_are_batched_and_answered_as_alone(hlr_run):
    users = [user_id(hlr_run, i) for i in range(0, 96, 3)]
    expected = {
        user: [r.item_id for r in ranked]
        for user, ranked in zip(users, runs.recommend_many(hlr_run, users, k=7), strict=True)
    }

    def ask_all(app) -> dict[str, list[str]]:
        """Every user's request at once, from as many threads, into one event loop."""
        with TestClient(app) as client, ThreadPoolExecutor(len(users) + 1) as pool:
            missing = pool.submit(client.get, "/recommend", params={"user": "missing"})
            answers = pool.map(
                lambda u: client.get("/recommend", params={"user": u, "k": 7}), users
            )
            assert missing.result().status_code == 404
            return {
                user: [row["item_id"] for row in answer.json()["items"]]
                for user, answer in zip(users, answers, strict=True)
            }

    batched = create_app(hlr_run, batching=Batching(max_batch=16, max_wait_ms=20))
    assert ask_all(batched) == expected
    sizes = batched.state.batcher.batch_sizes
    assert max(sizes) > 1 and max(sizes) <= 16 and sum(sizes) == len(users)

    single = create_app(hlr_run, batching=Batching(enabled=False))
    assert ask_all(single) == expected
    assert single.state.batcher.batch_sizes == []


def test_approximate_retrieval_is_reported(hlr_run):
    pytest.importorskip("faiss")
    from hlrm.retrieval import AnnIndex

    app = create_app(hlr_run, ann=AnnIndex.build(hlr_run.model, candidates=hlr_run.split.n_items))
    with TestClient(app) as client:
        assert client.get("/model").json()["retrieval"].startswith("approximate")
        user = user_id(hlr_run, 5)
        rows = client.get("/recommend", params={"user": user, "k": 5}).json()["items"]
    exact = runs.recommend_many(hlr_run, [user], k=5)[0]
    assert [row["item_id"] for row in rows] == [r.item_id for r in exact]  # every item a candidate


# ---- the console script --------------------------------------------------------------------------
def start_server(run_dir, *args: str) -> tuple[subprocess.Popen, str]:
    """``hlrm serve RUN_DIR --port 0 ...`` in a subprocess; returns it and its base URL."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    process = subprocess.Popen(
        [SCRIPT, "serve", str(run_dir), "--port", "0", "--device", "cpu", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=interruptible,
    )
    line = process.stdout.readline()
    if "serving" not in line:
        process.kill()
        raise AssertionError(f"no server: {line}{process.stderr.read()}")
    return process, line.split(" at ")[1].split()[0].rstrip("/")


@pytest.fixture(scope="module")
def lrml_run_dir(tmp_path_factory):
    return trained_run_dir(tmp_path_factory.mktemp("serve") / "lrml", "lrml", dim=8, n_slots=4)


@pytest.mark.skipif(SCRIPT is None, reason="the hlrm console script is not installed")
def test_console_script_serves_on_loopback_and_stops_on_ctrl_c(lrml_run_dir):
    process, url = start_server(lrml_run_dir)
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
            assert json.load(response)["model"] == "lrml"
        with urllib.request.urlopen(f"{url}/recommend?user=5&k=3&explain=true") as response:
            rows = json.load(response)["items"]
        assert len(rows) == 3 and rows[0]["explanation"]["related"]
        port = url.rsplit(":", 1)[1]
        busy = run_script("serve", str(lrml_run_dir), "--port", port)
        assert busy.returncode != 0 and "Traceback" not in busy.stderr
        assert busy.stderr.strip().startswith(f"error: cannot listen on 127.0.0.1:{port}")
        assert len(busy.stderr.strip().splitlines()) == 1
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err


def test_serve_without_the_extra_is_one_line(monkeypatch, capsys, lrml_run_dir):
    from cli_helpers import assert_clean_error, run_cli

    code, _, err = run_cli(monkeypatch, capsys, "serve", str(lrml_run_dir), "--port", "70000")
    assert_clean_error(code, err, "--port must lie in 0..65535")
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    code, _, err = run_cli(monkeypatch, capsys, "serve", str(lrml_run_dir))
    assert_clean_error(code, err, 'pip install "hlrm[serve]"')
