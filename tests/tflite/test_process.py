"""The converter process' parent thread: it lives exactly as long as the process.

The kernel's parent-death signal follows the thread that started the process, so that
thread must not end while the process is idle (the shared worker's threads do end
when idle); and it must not outlive the process either (no thread lingers).
"""

from __future__ import annotations

import threading

from cvml_tflite import process

DEADLINE = 120.0  # a guard against a hang, not a timing assertion


def _parent_threads():
    return {t for t in threading.enumerate() if t.name == "cvml-tflite-parent"}


def test_the_parent_thread_lives_as_long_as_the_converter_process():
    before = _parent_threads()
    converter = process.ConverterProcess()
    (parent,) = _parent_threads() - before
    assert converter.alive() and parent.is_alive()
    converter.close()
    parent.join(DEADLINE)
    assert not parent.is_alive() and converter.proc.returncode is not None


def test_a_failed_start_is_raised_and_leaves_no_thread(monkeypatch):
    before = _parent_threads()
    monkeypatch.setattr(process.sys, "executable", "/nonexistent/python")
    try:
        process.ConverterProcess()
    except OSError as exc:
        assert "/nonexistent/python" in str(exc)
    else:
        raise AssertionError("a converter process started from a missing executable")
    for thread in _parent_threads() - before:
        thread.join(DEADLINE)
        assert not thread.is_alive()
