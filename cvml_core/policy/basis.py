"""The basis policy every callback shares: which epochs are due, which basis keys
improved, and its saved state (the rules: the README's "basis policy")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cvml_core.policy.checks import check_int, check_number, is_integer

__all__ = ["BasisPolicy", "KeyBest", "MissingMetricError", "is_integer", "validate_basis_dict"]

MODES = ("min", "max")


class MissingMetricError(KeyError):
    """A basis key is not in the logs of a due epoch."""

    def __str__(self) -> str:  # not KeyError's quoted repr
        return str(self.args[0])


@dataclass
class KeyBest:
    """The best value of one basis key and the epoch (1-based) it was reached."""

    value: float | None = None
    epoch: int | None = None


def validate_basis_dict(basis_dict: Any) -> dict[str, str]:
    """Return ``basis_dict`` as ``{key: "min"|"max"}`` or raise ``ValueError``."""
    if not isinstance(basis_dict, Mapping) or not basis_dict:
        raise ValueError(
            "basis_dict must be a non-empty mapping of metric name to 'min' or 'max', "
            f"e.g. {{'val_loss': 'min'}}. Received: basis_dict={basis_dict!r}"
        )
    clean: dict[str, str] = {}
    for key, mode in basis_dict.items():
        if not isinstance(key, str) or not key:
            raise ValueError(
                "basis_dict keys must be non-empty metric names (str). "
                f"Received: key={key!r} in basis_dict={dict(basis_dict)!r}"
            )
        if not isinstance(mode, str) or mode.lower() not in MODES:
            raise ValueError(
                f"basis_dict[{key!r}] must be 'min' or 'max'. "
                f"Received: basis_dict[{key!r}]={mode!r}"
            )
        clean[key] = mode.lower()
    return clean


class BasisPolicy:
    """Decides, per epoch, whether it is due and which basis keys improved."""

    def __init__(
        self,
        basis_dict: Mapping[str, str],
        skip_from_start: int = 0,
        frequency: int = 1,
        min_delta: float = 0.0,
    ) -> None:
        self.basis = validate_basis_dict(basis_dict)
        self.skip_from_start = check_int(
            "skip_from_start", skip_from_start, 0, "the number of first epochs that are never due"
        )
        self.frequency = check_int(
            "frequency", frequency, 1, "an epoch e is due when e % frequency == 0"
        )
        self.min_delta = check_number("min_delta", min_delta, low=0.0)
        self.best: dict[str, KeyBest] = {key: KeyBest() for key in self.basis}

    def __repr__(self) -> str:
        return (
            f"BasisPolicy({self.basis!r}, skip_from_start={self.skip_from_start}, "
            f"frequency={self.frequency}, min_delta={self.min_delta})"
        )

    def is_due(self, epoch: int) -> bool:
        """Whether 1-based ``epoch`` is due for comparison."""
        return epoch > self.skip_from_start and epoch % self.frequency == 0

    def improves(self, key: str, value: float) -> bool:
        """Whether ``value`` would improve ``key``'s best (NaN and infinities never do)."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            return False
        if not math.isfinite(value):
            return False
        best = self.best[key].value
        if best is None:
            return True
        if self.basis[key] == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def update(self, epoch: int, logs: Mapping[str, Any] | None) -> list[str]:
        """Record a finished 1-based ``epoch``; return the keys that improved."""
        if not self.is_due(epoch):
            return []
        logs = dict(logs or {})
        missing = [key for key in self.basis if key not in logs]
        if missing:
            raise MissingMetricError(
                f"basis key(s) {missing} not found in the epoch logs. Keys present: "
                f"{sorted(logs)}. Check the spelling (e.g. 'val_acc' vs "
                "'val_accuracy') and that validation data is given for 'val_' keys."
            )
        improved = [key for key in self.basis if self.improves(key, logs[key])]
        self.best.update({key: KeyBest(float(logs[key]), epoch) for key in improved})
        return improved

    def state_dict(self, best: Mapping[str, KeyBest] | None = None) -> dict[str, Any]:
        """A JSON-serialisable state: the basis and each key's best (or ``best``'s)."""
        return {
            "basis": dict(self.basis),
            "skip_from_start": self.skip_from_start,
            "frequency": self.frequency,
            "min_delta": self.min_delta,
            "best": {
                key: {"value": kb.value, "epoch": kb.epoch}
                for key, kb in (self.best if best is None else best).items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the bests of a :meth:`state_dict`; a key whose mode changed raises."""
        saved_basis = state.get("basis", {})
        saved_best = state.get("best", {})
        for key, mode in self.basis.items():
            if key not in saved_best:
                continue
            if saved_basis.get(key, mode) != mode:
                raise ValueError(
                    f"the saved basis state tracks {key!r} as {saved_basis[key]!r} but "
                    f"basis_dict now says {mode!r}; use a new log_dir or keep the mode"
                )
            entry = saved_best[key] or {}
            value = entry.get("value")
            epoch = entry.get("epoch")
            self.best[key] = KeyBest(
                None if value is None else float(value),
                None if epoch is None else int(epoch),
            )
