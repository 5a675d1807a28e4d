"""Transport security of the scorer: TLS, mutual TLS and the bearer token, on a live server."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from ds_serving.bundle import promote
from ds_serving.client import ScorerClient, encode_request
from ds_serving.server import ServerConfig, ServerThread
from tests.support.serving import normal_rows, write_point_bundle

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

TOKEN = "s3cret-token"


def _cert(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey]
    | None, *, ca: bool = False, san: bool = False,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(
    path: Path, cert: x509.Certificate | None, key: ec.EllipticCurvePrivateKey | None
) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        assert key is not None
        path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("localhost", server_key, (ca.subject, ca_key), san=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("client", client_key, (ca.subject, ca_key))
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _cert("rogue", rogue_key, None)
    return {
        "ca": _write(d / "ca.pem", ca, None),
        "server_cert": _write(d / "server.pem", server, None),
        "server_key": _write(d / "server.key", None, server_key),
        "client_cert": _write(d / "client.pem", client, None),
        "client_key": _write(d / "client.key", None, client_key),
        "rogue_cert": _write(d / "rogue.pem", rogue, None),
        "rogue_key": _write(d / "rogue.key", None, rogue_key),
    }


def _serve(models: Path, **kw: object) -> ServerThread:
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    config = ServerConfig(models_dir=models, name="ae", host="127.0.0.1", port=0,
                          metrics_port=None, **kw)  # type: ignore[arg-type]
    thread = ServerThread(config)
    thread.start()
    return thread


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def token_server(models: Path) -> Iterator[int]:
    thread = _serve(models, token=TOKEN)
    try:
        yield thread.server.port
    finally:
        thread.stop(0)


def test_token_required_for_scoring_but_not_for_health(token_server: int) -> None:
    target = f"127.0.0.1:{token_server}"
    rows = normal_rows(2)
    for token in (None, "wrong"):
        with ScorerClient(target, token=token, timeout=5) as client:
            for call in (lambda c=client: c.score(rows), lambda c=client: c.info(),
                         lambda c=client: list(c.score_stream([encode_request(rows)]))):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
                assert "bearer token" in info.value.details()  # type: ignore[attr-defined]
            assert client.health() == "SERVING"  # probes need no token
    with ScorerClient(target, token=TOKEN, timeout=5) as client:
        assert len(client.score(rows).scores) == 2
        assert [len(r.scores) for r in client.score_stream([encode_request(rows)])] == [2]


def test_tls_server(models: Path, pki: dict[str, Path]) -> None:
    thread = _serve(models, tls_cert=pki["server_cert"], tls_key=pki["server_key"])
    target = f"localhost:{thread.server.port}"
    try:
        with ScorerClient(target, tls_ca=pki["ca"], timeout=5) as client:
            assert np.isfinite(client.score(normal_rows(3)).scores).all()
        with ScorerClient(target, timeout=3) as plaintext, pytest.raises(grpc.RpcError):
            plaintext.score(normal_rows(1))
    finally:
        thread.stop(0)


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    models: Path, pki: dict[str, Path]
) -> None:
    thread = _serve(models, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                    tls_client_ca=pki["ca"], token=TOKEN)
    target = f"localhost:{thread.server.port}"
    try:
        with ScorerClient(target, tls_ca=pki["ca"], tls_cert=pki["client_cert"],
                          tls_key=pki["client_key"], token=TOKEN, timeout=5) as client:
            assert len(client.score(normal_rows(3)).scores) == 3
        for cert, key in ((None, None), (pki["rogue_cert"], pki["rogue_key"])):
            with ScorerClient(target, tls_ca=pki["ca"], tls_cert=cert, tls_key=key,
                              token=TOKEN, timeout=3) as client, pytest.raises(grpc.RpcError):
                client.score(normal_rows(1))
    finally:
        thread.stop(0)


def test_config_rejects_half_tls_setups(models: Path, pki: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="both --tls-cert and --tls-key"):
        ServerConfig(models_dir=models, name="ae", tls_cert=pki["server_cert"])
    with pytest.raises(ValueError, match="mutual TLS"):
        ServerConfig(models_dir=models, name="ae", tls_client_ca=pki["ca"])
    with pytest.raises(ValueError, match="token"):
        ServerConfig(models_dir=models, name="ae", token="  ")


def test_a_tls_key_that_is_not_the_certificates_names_the_tls_files(
    models: Path, pki: dict[str, Path], tmp_path: Path,
) -> None:
    """A garbage or mismatched certificate and key failed the bind, reported as "is the port
    in use?": the TLS files are named now."""
    garbage = tmp_path / "key.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    config = ServerConfig(models_dir=models, name="ae", host="127.0.0.1", port=0,
                          metrics_port=None, tls_cert=pki["server_cert"], tls_key=garbage)
    with pytest.raises(OSError, match="with TLS: are --tls-cert and --tls-key a matching PEM"):
        ServerThread(config).start()
