"""``engineroom serve --ssl-certfile --ssl-keyfile`` serves HTTPS, and only HTTPS."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import (
    SelfSignedCertificate,
    ServerProcess,
    make_self_signed_certificate,
    serve_process,
)

pytestmark = pytest.mark.xdist_group("e2e")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCertificate:
    return make_self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, certificate: SelfSignedCertificate
) -> Iterator[ServerProcess]:
    args = ["--ssl-certfile", str(certificate.certfile), "--ssl-keyfile", str(certificate.keyfile)]
    with serve_process(
        tmp_path_factory.mktemp("tls-server"),
        args=args,
        scheme="https",
        verify=certificate.client_context(),
    ) as server:
        yield server


def test_https_answers_with_the_given_certificate(tls_server: ServerProcess) -> None:
    assert tls_server.base_url.startswith("https://127.0.0.1:")

    with tls_server.client() as client:
        response = client.get("/healthz")

    assert response.status_code == 200
    assert response.extensions["http_version"] == b"HTTP/1.1"


def test_localhost_name_is_in_the_certificate(
    tls_server: ServerProcess, certificate: SelfSignedCertificate
) -> None:
    url = tls_server.base_url.replace("127.0.0.1", "localhost") + "/healthz"

    response = httpx.get(url, verify=certificate.client_context(), timeout=30)

    assert response.status_code == 200


def test_hsts_is_sent_over_tls(tls_server: ServerProcess) -> None:
    with tls_server.client() as client:
        response = client.get("/healthz")

    assert "max-age=" in response.headers["strict-transport-security"]


def test_certificate_is_not_trusted_by_default(tls_server: ServerProcess) -> None:
    # Proves the client above trusted this certificate because we told it to.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_server.base_url}/healthz", timeout=30)


def test_plain_http_to_the_tls_port_fails(tls_server: ServerProcess) -> None:
    plain = tls_server.base_url.replace("https://", "http://") + "/healthz"

    with pytest.raises(httpx.TransportError):
        httpx.get(plain, timeout=30)


def test_startup_output_lists_https_urls(tls_server: ServerProcess) -> None:
    output = tls_server.output()

    assert f"{tls_server.base_url}/docs" in output
    assert f"{tls_server.base_url}/healthz" in output
    assert tls_server.base_url.replace("https://", "http://") not in output
