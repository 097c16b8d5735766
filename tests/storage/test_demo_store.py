"""``cvml demo --log-dir s3://...`` and the README's plugin example on S3 (credentials
and endpoint from the environment, as a user's shell would give them)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import cvml_core
from cvml_core.artifacts.manifest import read_manifest
from cvml_core.artifacts.storage import open_store
from cvml_core.train.demo import MARKER, run_demo


def test_the_demo_writes_its_run_into_a_bucket(s3_server, monkeypatch, capsys):
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.bucket("cvml-demo")
    url = f"s3://{bucket}/demo"
    assert run_demo(url, epochs=2) == 0
    out = capsys.readouterr().out
    assert f"{url}/ckpt/best_val_loss.keras" in out
    store = open_store(url)
    assert store.exists(MARKER)
    assert "best_val_loss.keras" in store.child("ckpt").names()
    assert run_demo(url, epochs=1) == 0  # a demo's own run is replaced
    assert read_manifest(store.child("ckpt"))["artifacts"][-1]["epoch"] == 1

    open_store(f"s3://{bucket}/other").write_bytes("notes.txt", b"keep me")
    assert run_demo(f"s3://{bucket}/other", epochs=1) == 2
    assert "not empty" in capsys.readouterr().err
    assert open_store(f"s3://{bucket}/other").exists("notes.txt")


def test_the_readme_plugin_example_writes_to_the_store(s3_server, tiny_model, tiny_data):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = re.search(r"```python\n(# my_package.py\n.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    bucket = s3_server.bucket("cvml-thirdparty")
    url, options = f"s3://{bucket}/run", s3_server.storage_options()
    cb = namespace["MyCallback"](url, {"val_loss": "min"}, storage_options=options)
    x, y = tiny_data
    model = tiny_model()
    model.fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[cb])
    store = open_store(url, options).child(cb.name)
    with store.local_copy("best_val_loss.npz") as path:
        assert len(np.load(path).files) == len(model.get_weights())
    assert read_manifest(store)["artifacts"][-1]["path"].startswith(url)
    assert isinstance(cb.store, cvml_core.Store)
