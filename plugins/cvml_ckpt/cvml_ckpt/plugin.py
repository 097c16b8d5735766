"""Registers the ``ckpt`` callback; imports nothing heavy."""

import cvml_core


@cvml_core.hookimpl
def cvml_register_callbacks(register):
    register(
        "ckpt",
        "cvml_ckpt.callback:CkptCallback",
        summary="Saves the best checkpoint per basis key (atomic, resumable, in the background)",
    )
