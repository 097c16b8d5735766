"""Real object stores for the storage tests: one SeaweedFS (S3) and one fake-gcs-server
(GCS) per test session, on free ports of 127.0.0.1; a fresh bucket per test."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

# gcsfs' zonal/HNS probe speaks gRPC to storage.googleapis.com, which the emulator
# does not serve (each probe waits 60 s); the plain JSON API is all the emulator has.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from servers import FakeGCS, SeaweedS3  # noqa: E402


@pytest.fixture(scope="session")
def s3_server():
    server = SeaweedS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    server = FakeGCS().start()
    yield server
    server.stop()


def _bucket_name() -> str:
    return f"cvml-{secrets.token_hex(4)}"


@pytest.fixture(params=["s3", "gs"])
def store(request):
    """(log_dir URL, storage_options) on a fresh bucket of each real server."""
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
    else:
        server = request.getfixturevalue("gcs_server")
    bucket = server.bucket(_bucket_name())
    return f"{request.param}://{bucket}/run", server.storage_options()
