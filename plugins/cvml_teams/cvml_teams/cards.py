"""The Teams cards: Adaptive Card messages for a run's start, end and failure.

The payload is what Teams "Workflows" webhooks (the "Post to a channel when a
webhook request is received" template, which replaced the retired Office 365
connectors) accept: a message whose attachments are Adaptive Cards::

    {"type": "message",
     "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                      "contentUrl": None,
                      "content": {"type": "AdaptiveCard", "version": "1.4",
                                  "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                                  "msteams": {"width": "Full"},
                                  "body": [...TextBlock / FactSet...]}}]}

Every card names the run and the host that ran it. Text: TextBlocks and facts are
Adaptive Card markdown (a CommonMark subset). Every value that comes from the run
(paths, names, metrics, error messages, tracebacks) is escaped with CommonMark
backslash escapes (:func:`md_escape`), so ``__cache__`` stays ``__cache__`` and paths
show as they are. Lines are separated by a blank line, the line break Teams renders;
leading spaces become no-break spaces (indentation kept). A traceback is one TextBlock
per line in a Container (:func:`code_block`), so it stays compact. Artifacts read as a
person would say them (:func:`artifact_line`).

Pure functions of a :class:`~cvml_core.plugin_host.run_info.RunInfo`; standard library only.
"""

from __future__ import annotations

import re
import string
import time
import traceback
from collections.abc import Mapping
from typing import Any

from cvml_core import Artifact, RunInfo

CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
#: The most characters of traceback a failure card carries (whole frames only).
TRACEBACK_CHARS = 4000
#: The most characters of the error message in the failure card's "Error" fact.
ERROR_CHARS = 300


# -- Adaptive Card markdown ----------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
# Inline markup anywhere in a line: emphasis, strikethrough, code, links, HTML, entities.
_ALWAYS = frozenset("`*~[]<>&")
_ORDERED = re.compile(r"(\d{1,9})([.)])(?=[ \t]|$)")
_UNDERSCORES = re.compile(r"_+")


def _inword(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` sits between two letters or digits (``best_val``)."""
    return 0 < start and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()


def _escape_line(line: str) -> str:
    body = line.lstrip(" \t")
    indent = line[: len(line) - len(body)].replace("\t", "    ")
    # Underscores inside a word never make emphasis in CommonMark: only the others
    # (``__cache__``, ``_x``) are escaped, so names like best_val_loss stay as they are.
    literal: set[int] = set()
    for run in _UNDERSCORES.finditer(body):
        if _inword(body, run.start(), run.end()):
            literal.update(range(run.start(), run.end()))
    out = []
    for i, char in enumerate(body):
        after = body[i + 1 : i + 2]
        if (
            char in _ALWAYS
            or (char == "_" and i not in literal)
            or (char == "\\" and (not after or after in _PUNCTUATION))
        ):
            out.append("\\" + char)
        else:
            out.append(char)
    text = "".join(out)
    # Block markers at the start of a line: headings, lists, thematic breaks, setext.
    first, second = text[:1], text[1:2]
    marker = first in ("-", "+", "=") and (second in ("", " ", "\t") or set(text) <= {first, " "})
    if first == "#" or marker:
        text = "\\" + text
    else:
        match = _ORDERED.match(text)
        if match:
            text = match.group(1) + "\\" + text[match.end(1):]
    # Leading spaces would start a code block or vanish: keep them as no-break spaces.
    return "\u00a0" * len(indent) + text


def md_escape(text: Any, newline: str = "\n\n") -> str:
    """``text`` as literal Adaptive Card markdown.

    Markdown characters are backslash-escaped (CommonMark escapes), leading spaces
    become no-break spaces, and lines are joined by ``newline``: a blank line by
    default, the line break Teams renders (a single newline shows as a space).
    """
    lines = str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return newline.join(_escape_line(line) for line in lines)


# -- the cards -----------------------------------------------------------------------


def _number(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _facts(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """A FactSet; titles and values are escaped, a multi-line value joined by spaces."""
    return {
        "type": "FactSet",
        "facts": [
            {"title": md_escape(k, " "), "value": md_escape(v, " ")} for k, v in pairs.items()
        ],
    }


def _text(text: str, **style: Any) -> dict[str, Any]:
    """A TextBlock of ``text`` as it is (markdown): escape what comes from the run."""
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def adaptive_card_message(body: list[dict[str, Any]]) -> dict[str, Any]:
    """Wrap Adaptive Card ``body`` elements in the message a Workflows webhook accepts."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": CARD_SCHEMA,
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": body,
                },
            }
        ],
    }


def _run_facts(run: RunInfo) -> dict[str, Any]:
    facts: dict[str, Any] = {"Run": run.run_name, "Host": run.host or "-"}
    if run.model_name and run.model_name != run.run_name:
        facts["Model"] = run.model_name
    if run.log_dir:
        facts["Log dir"] = run.log_dir
    return facts


def _title(title: str, color: str) -> dict[str, Any]:
    return _text(title, size="Large", weight="Bolder", color=color)


def resume_text(run: RunInfo) -> str | None:
    """What a resumed run restored, in words; None for a new run."""
    start = run.start_epoch
    if not start:
        return None
    if run.restored_epoch is None:
        return f"after epoch {start} (start_epoch={start}; what was restored is not known)"
    if run.restored_epoch <= 0:
        why = run.restored_by or "no checkpoint was found"
        return (
            f"after epoch {start}, but nothing was restored ({why}): training went on "
            "from the model's current weights"
        )
    by = f" by {run.restored_by}" if run.restored_by else ""
    if run.restored_epoch < start:
        return (
            f"after epoch {start}, from the weights of epoch {run.restored_epoch} (the "
            f"latest checkpoint up to epoch {start}), restored{by}"
        )
    return f"after epoch {start}: the weights of epoch {run.restored_epoch} restored{by}"


def start_card(run: RunInfo) -> dict[str, Any]:
    """The card posted when training starts."""
    facts = _run_facts(run)
    facts["Epochs"] = f"{run.start_epoch + 1} to {run.epochs}"
    resumed = resume_text(run)
    if resumed:
        facts["Resumed"] = resumed
    facts["Basis"] = ", ".join(f"{k} ({m})" for k, m in run.basis_dict.items()) or "-"
    facts["Callbacks"] = ", ".join(run.callbacks) or "-"
    facts["Started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(run.start_time))
    return adaptive_card_message([_title("Training started", "Accent"), _facts(facts)])


def _metrics_block(title: str, logs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    metrics = {k: _number(v) for k, v in (logs or {}).items()}
    if not metrics:
        return []
    return [_text(title, weight="Bolder", spacing="Medium"), _facts(metrics)]


def _best_block(run: RunInfo) -> list[dict[str, Any]]:
    if not run.best:
        return []
    rows = {}
    for key, best in run.best.items():
        mode = run.basis_dict.get(key, "")
        label = f"{key} ({mode})" if mode else key
        if best.get("value") is None:
            rows[label] = "no finite value yet"
        else:
            rows[label] = f"{_number(best['value'])} at epoch {best.get('epoch')}"
    return [_text("Best", weight="Bolder", spacing="Medium"), _facts(rows)]


#: How an artifact's kind reads in a card; other kinds read as they are named.
KIND_WORDS = {"checkpoint": "checkpoint", "tflite": "TFLite model"}


def artifact_line(artifact: Artifact) -> str:
    """One artifact as a person would say it (plain text, not yet escaped).

    ``best checkpoint for val_loss (epoch 7): <path>``, ``last checkpoint (epoch 8):
    <path>``; an artifact whose details name a TensorBoard ``logdir`` reads
    ``TensorBoard: tensorboard --logdir <logdir>``.
    """
    logdir = artifact.details.get("logdir")
    if logdir:
        return f"TensorBoard: tensorboard --logdir {logdir}"
    noun = KIND_WORDS.get(artifact.kind, artifact.kind)
    if artifact.basis_key:
        label = f"best {noun} for {artifact.basis_key}"
    elif artifact.details.get("role") == "last":
        label = f"last {noun}"
    else:
        label = noun
    return f"{label} (epoch {artifact.epoch}): {artifact.path}"


def _artifacts_block(run: RunInfo) -> list[dict[str, Any]]:
    lines: list[str] = []
    for artifact in run.latest_artifacts():
        line = f"- {md_escape(artifact_line(artifact), ' ')}"
        if line not in lines:  # one TensorBoard line per folder
            lines.append(line)
    if not lines:
        return []
    return [
        _text("Artifacts", weight="Bolder", spacing="Medium"),
        _text("\n".join(lines)),  # a markdown list: one item per line
    ]


def end_card(run: RunInfo, logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The card posted when training finished normally."""
    facts = _run_facts(run)
    facts["Epochs"] = f"{run.epochs_done} of {run.epochs}"
    facts["Duration"] = _duration(run.duration)
    body = [_title("Training finished", "Good"), _facts(facts)]
    body += _metrics_block("Final metrics", logs)
    body += _best_block(run)
    body += _artifacts_block(run)
    return adaptive_card_message(body)


def traceback_text(error: BaseException, limit: int = TRACEBACK_CHARS) -> str:
    """``error``'s traceback (with its chained causes) in at most about ``limit`` characters.

    The exception lines always come; then as many whole entries (frames, chain
    headers) as fit, nearest the error first. What does not fit is said in a first
    line, never cut mid-frame. An exception text longer than ``limit`` is cut with "…".
    """
    formatted = traceback.TracebackException.from_exception(error)
    chunks = list(formatted.format())
    tail_lines = list(formatted.format_exception_only())
    count = len(tail_lines)
    if count and "".join(chunks[-count:]) == "".join(tail_lines):
        body, tail = chunks[:-count], "".join(tail_lines)
    else:  # an unusual layout: the last chunk is the exception
        body, tail = chunks[:-1], "".join(chunks[-1:])
    if len(tail) > limit:
        tail = tail[: max(1, limit - 1)].rstrip() + "…\n"
    room = limit - len(tail)
    kept: list[str] = []
    for chunk in reversed(body):
        if len(chunk) > room:
            break
        kept.append(chunk)
        room -= len(chunk)
    omitted = body[: len(body) - len(kept)]
    head = []
    if omitted:
        frames = sum(1 for chunk in omitted if chunk.lstrip().startswith("File "))
        lines = "".join(omitted).count("\n")
        head.append(
            f"… the first {lines} lines ({frames} frames) of the traceback are not "
            "shown (card size limit) …\n"
        )
    return "".join(head + kept[::-1] + [tail]).rstrip("\n")


def failure_card(
    run: RunInfo, logs: Mapping[str, Any] | None, error: BaseException
) -> dict[str, Any]:
    """The card posted when training raised (or was interrupted)."""
    interrupted = isinstance(error, KeyboardInterrupt)
    title = "Training interrupted" if interrupted else "Training failed"
    message = str(error).strip().splitlines()
    first = message[0] if message else ""
    if len(first) > ERROR_CHARS:
        first = first[: ERROR_CHARS - 1] + "…"
    facts = _run_facts(run)
    facts["Error"] = f"{type(error).__name__}: {first}".rstrip(": ")
    facts["Epochs done"] = f"{run.epochs_done} of {run.epochs}"
    facts["Duration"] = _duration(run.duration)
    body = [_title(title, "Attention"), _facts(facts)]
    body += _metrics_block("Last metrics", logs)
    body += _best_block(run)
    body += _artifacts_block(run)
    body.append(_text("Traceback", weight="Bolder", spacing="Medium"))
    body.append(code_block(traceback_text(error)))
    return adaptive_card_message(body)


def code_block(text: str) -> dict[str, Any]:
    """``text`` line for line, monospaced and compact: a Container of one TextBlock per
    line with no spacing between them (one TextBlock with blank-line separated lines
    shows a blank line between every two lines in Teams)."""
    lines = str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return {
        "type": "Container",
        "style": "emphasis",
        "items": [
            _text(md_escape(line) or "\u00a0", fontType="Monospace", size="Small",
                  spacing="None")
            for line in lines
        ],
    }
