"""Gemini on Vertex AI: Application Default Credentials (a service account whose token
endpoint is the local server), the Vertex path with project and location, no API key."""

from __future__ import annotations

import json

import pytest

from build_tools.fakes.llm_server import TOKEN_PATH, LocalLlmServer
from pipelines.llm.backends import BackendConfig, GeminiBackend
from pipelines.llm.client import LlmClient
from pipelines.llm.request import ImagePart, LlmRequest
from schemas.common import TemplateRef
from schemas.llm import Explanation


@pytest.fixture
def service_account(tmp_path, monkeypatch):
    """A service-account key file whose token_uri the test sets to the server."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "service_account.json"
    for variable in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))

    def write(token_uri: str) -> None:
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "facext-test", "private_key_id": "k1",
            "private_key": pem, "client_email": "facext@facext-test.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": token_uri}))

    return write


def test_vertex_calls_carry_project_location_and_an_oauth_token(service_account):
    with LocalLlmServer() as server:
        service_account(server.url + TOKEN_PATH)
        backend = GeminiBackend(BackendConfig("gemini", "gemini-2.5-flash", base_url=server.url, vertex=True,
                                              project="facext-test", location="europe-west4"))
        client = LlmClient(backend)
        request = LlmRequest(TemplateRef(id="t@v1", version="0"), "system", "explain", Explanation,
                             (ImagePart(b"\x89PNG not really"),))
        assert client.ask(request).explanation
        [call] = server.generation_calls()
        assert call.path == ("/v1beta1/projects/facext-test/locations/europe-west4/publishers/google/models/"
                             "gemini-2.5-flash:generateContent")
        assert call.images == 1 and call.schema is not None
        assert server.tokens_issued and call.api_key == server.tokens_issued[-1]  # the bearer token, no key


def test_vertex_needs_no_api_key_in_the_settings(tmp_path, monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.common.run_settings import llm_settings
    from pipelines.fifa_annotate import FifaOptions

    for variable in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    options = PipelineOptions(["--describer", "gemini", "--llm_vertex", "--llm_project", "p",
                               "--output", str(tmp_path)]).view_as(FifaOptions)
    settings = llm_settings(options)
    assert settings["describer_llm"].vertex and settings["describer_llm"].project == "p"
    with pytest.raises(SystemExit, match="GEMINI_API_KEY"):  # without Vertex the key is required
        llm_settings(PipelineOptions(["--describer", "gemini", "--output", str(tmp_path)]).view_as(FifaOptions))
