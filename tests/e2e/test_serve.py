"""``engineroom serve`` as a real process: every platform endpoint answers, the start-up
output says where they are, and SIGTERM stops it cleanly.
"""

from __future__ import annotations

import stat

import pytest

from engineroom import __version__
from engineroom.settings import SECRET_KEY_FILENAME
from tests.e2e.conftest import StartServer
from tests.support.server import ServerFailedError, ServerProcess

pytestmark = pytest.mark.xdist_group("e2e")


def test_healthz_says_alive(embedded_server: ServerProcess) -> None:
    with embedded_server.client() as client:
        response = client.get("/healthz")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")


def test_readyz_is_ready_because_serve_migrated_on_start(embedded_server: ServerProcess) -> None:
    with embedded_server.client() as client:
        response = client.get("/readyz")

    assert response.status_code == 200, response.text
    assert (embedded_server.data_dir / "engineroom.db").exists()


@pytest.mark.parametrize(("path", "marker"), [("/docs", "swagger-ui"), ("/redoc", "redoc")])
def test_api_docs_are_html(embedded_server: ServerProcess, path: str, marker: str) -> None:
    with embedded_server.client() as client:
        response = client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert marker in response.text.lower()
    assert "/openapi.json" in response.text


def test_openapi_document_is_served(embedded_server: ServerProcess) -> None:
    with embedded_server.client() as client:
        response = client.get("/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert document["info"]["version"] == __version__
    assert "/healthz" in document["paths"]
    assert "Problem" in document["components"]["schemas"]


def test_graphql_answers_a_query(embedded_server: ServerProcess) -> None:
    with embedded_server.client() as client:
        response = client.post("/graphql", json={"query": "{ version }"})

    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"version": __version__}}


def test_metrics_count_requests(embedded_server: ServerProcess) -> None:
    with embedded_server.client() as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "engineroom_http_requests_total{" in response.text


def test_unknown_path_is_a_problem_document(embedded_server: ServerProcess) -> None:
    with embedded_server.client() as client:
        response = client.get("/api/v1/no-such-thing")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404


def test_plain_http_sends_no_hsts(embedded_server: ServerProcess) -> None:
    with embedded_server.client() as client:
        response = client.get("/healthz")

    assert "strict-transport-security" not in response.headers


def test_startup_output_lists_the_urls(embedded_server: ServerProcess) -> None:
    output = embedded_server.output()
    base = embedded_server.base_url

    assert f"serving on {base} " in output
    for path in ("/docs", "/redoc", "/openapi.json", "/graphql", "/metrics", "/healthz", "/readyz"):
        assert f"{base}{path}" in output


def test_development_secret_is_written_with_mode_0600(embedded_server: ServerProcess) -> None:
    secret_path = embedded_server.data_dir / SECRET_KEY_FILENAME

    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert len(secret_path.read_text(encoding="utf-8")) >= 32


def test_sigterm_stops_cleanly_and_a_restart_keeps_data(start_server: StartServer) -> None:
    first = start_server()
    secret = (first.data_dir / SECRET_KEY_FILENAME).read_text(encoding="utf-8")

    assert first.stop() == 0
    assert "Traceback" not in first.output()

    # Same data dir: migrations find nothing to do and the secret key is reused.
    second = start_server(data_dir=first.data_dir)
    with second.client() as client:
        assert client.get("/readyz").status_code == 200
    assert (first.data_dir / SECRET_KEY_FILENAME).read_text(encoding="utf-8") == secret
    assert second.stop() == 0
    assert "Traceback" not in second.output()


def test_wrong_setting_stops_the_process_with_one_line(start_server: StartServer) -> None:
    with pytest.raises(ServerFailedError) as caught:
        start_server(env={"ENGINEROOM_LOG_LEVEL": "LOUD"})

    assert caught.value.exit_code == 2
    lines = caught.value.output.strip().splitlines()
    assert len(lines) == 1, caught.value.output
    assert lines[0].startswith("error: ENGINEROOM_LOG_LEVEL: ")
    assert "'LOUD'" in lines[0]
