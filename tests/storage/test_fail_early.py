"""A log_dir that cannot be used fails when the callback is built (before epoch 1),
with a message that names the problem and never shows a secret."""

from __future__ import annotations

import pytest
from cvml_ckpt import CkptCallback
from servers import SECRET_KEY, free_port

from cvml_core import LogDirError
from cvml_core.artifacts.storage import mask


def _build(url, options):
    return CkptCallback(url, {"val_loss": "min"}, storage_options=options)


def test_an_unknown_scheme_names_the_package_to_install():
    with pytest.raises(ValueError, match=r'pip install "cvml-core\[azure\]"') as info:
        _build("az://container/run", None)
    assert "adlfs" in str(info.value)
    with pytest.raises(ValueError, match="fsspec knows no filesystem for 'nosuch'"):
        _build("nosuch://b/run", None)


def test_a_missing_bucket_fails_at_construction(s3_server, gcs_server):
    with pytest.raises(LogDirError, match="the bucket does not exist") as info:
        _build("s3://cvml-no-such-bucket/run", s3_server.storage_options())
    assert "s3://cvml-no-such-bucket/run" in str(info.value)
    with pytest.raises(LogDirError, match="cannot be used"):
        _build("gs://cvml-no-such-bucket/run", gcs_server.storage_options())


def test_refused_credentials_fail_without_showing_the_secret(s3_server, capsys):
    bucket = s3_server.bucket("cvml-creds")
    wrong = "wrong-secret-do-not-print-0123"
    with pytest.raises(LogDirError, match="access denied") as info:
        _build(f"s3://{bucket}/run", s3_server.storage_options(secret=wrong))
    out = capsys.readouterr()
    for text in (str(info.value), repr(info.value), out.out, out.err):
        assert wrong not in text and SECRET_KEY not in text


def test_a_closed_port_fails_at_construction():
    port = free_port()  # nothing listens there
    options = {"key": "k", "secret": "s3cr3t-value", "client_kwargs": {
        "endpoint_url": f"http://127.0.0.1:{port}"}, "config_kwargs": {
        "retries": {"max_attempts": 1}, "connect_timeout": 2}}
    with pytest.raises(LogDirError, match="cannot be reached") as info:
        _build("s3://cvml-bucket/run", options)
    assert "s3cr3t-value" not in str(info.value)


def test_urls_are_shown_without_userinfo_or_query():
    assert mask("s3://user:pass@bucket/run?token=abc#x") == "s3://bucket/run"
    assert mask("runs/x") == "runs/x"
