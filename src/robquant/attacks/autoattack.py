"""AutoAttack, APGD and Square through the official code (``pyautoattack``), behind our Attack API.

Numbers reported as "AutoAttack" come from the package itself, never from a re-implementation.
The wrapper adds only what an evaluation record needs:

- the model mode and BN-folded view of :class:`~robquant.attacks.base.Attack`;
- a seed per call drawn from the attack's generator (the package reseeds the global RNG: that
  happens inside a forked RNG state, so the caller's random stream is untouched);
- the package version, the robust count left after each sub-attack, and every warning the
  package's checks raise (logged or ``warnings.warn``), accumulated over the calls.

Attacks run in the package's own cascade: each sub-attack sees only the points that survived the
previous ones, exactly as ``AutoAttack.run_standard_evaluation`` does.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from robquant.attacks.base import NORMS, Attack, Cost
from robquant.attacks.registry import ATTACKS
from robquant.defaults import SQUARE_QUERIES
from robquant.errors import ConfigError, check_range
from robquant.options import Option

PACKAGE = "pyautoattack"
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
_NORMS = {"linf": "Linf", "l2": "L2"}
# per example, at most: APGD 100 iterations (APGD-T and FAB-T: 9 targets x 100), Square 5000 queries
GRADIENT_PASSES = {"apgd-ce": 100, "apgd-t": 900, "fab-t": 900, "square": 0}
FORWARD_PASSES = {"apgd-ce": 0, "apgd-t": 0, "fab-t": 0, "square": SQUARE_QUERIES}


def package_version() -> str:
    """``pyautoattack <version>``; raises ConfigError naming the install command when it is missing."""
    try:
        import pyautoattack
    except ImportError:
        raise ConfigError("AutoAttack needs the pyautoattack package: pip install pyautoattack==0.2.0") from None
    return f"{PACKAGE} {getattr(pyautoattack, '__version__', 'unknown')}"


class _Capture(logging.Handler):
    """Collects the package's log records (its checks warn through the 'auto-attack' logger)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _captured(sink: list[str]) -> Iterator[None]:
    """Route the package's warnings (log records at WARNING and ``warnings.warn``) into ``sink``."""
    logger = logging.getLogger("auto-attack")
    handler = _Capture()
    old = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old[0])
        logger.propagate = old[1]
    messages = [r.getMessage() for r in handler.records if r.levelno >= logging.WARNING]
    messages += [str(w.message) for w in caught]
    for m in messages:
        if m not in sink:
            sink.append(m)


class _PackageAttack(Attack):
    """Shared plumbing: seeding, RNG isolation, warning capture, version."""

    def __init__(self, model: nn.Module, eps: float, *, norm: str = "linf", seed: int = 0,
                 generator: torch.Generator | None = None, model_mode: str = "eval", fold_bn: bool = True) -> None:
        super().__init__(model, eps, norm=norm, model_mode=model_mode, generator=generator, fold_bn=fold_bn)
        self.package = package_version()
        self.seed = int(seed)
        self.warnings: list[str] = []

    def _call_seed(self) -> int:
        if self.generator is None:
            return self.seed
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator, device=self.generator.device))

    @contextmanager
    def _isolated(self, device: torch.device) -> Iterator[None]:
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _captured(self.warnings):
            yield


@ATTACKS.register("autoattack")
class AutoAttack(_PackageAttack):
    """AutoAttack (Croce & Hein, ICML 2020), ``standard`` version, through ``pyautoattack``.

    Args:
        model: Classifier returning logits, inputs in [0, 1].
        eps: Budget in [0, 1] units.
        attacks: Which of the standard sub-attacks to run, in the standard order: all four
            (``apgd-ce``, ``apgd-t``, ``fab-t``, ``square``; the default) or a cheaper subset such
            as ``["apgd-ce"]`` or ``["apgd-ce", "apgd-t"]``, each with the standard version's settings.
        norm: ``"linf"`` or ``"l2"``.
        seed: Seed when no generator is set (else one is drawn from the generator per call).
    """

    name = "autoattack"
    OPTIONS = (Option("attacks", None, "sub-attacks (default: standard, apgd-ce, apgd-t, fab-t, square; apgd: "
                      "apgd-ce)"),
               Option("norm", "linf", "the threat model's norm", str, choices=NORMS))

    def __init__(self, model: nn.Module, eps: float, *, attacks: Sequence[str] | None = None, norm: str = "linf",
                 seed: int = 0, generator: torch.Generator | None = None, model_mode: str = "eval",
                 fold_bn: bool = True) -> None:
        super().__init__(model, eps, norm=norm, seed=seed, generator=generator, model_mode=model_mode,
                         fold_bn=fold_bn)
        chosen = list(STANDARD if attacks is None else attacks)
        bad = [a for a in chosen if a not in STANDARD]
        if bad or not chosen or len(set(chosen)) != len(chosen):
            raise ConfigError(f"autoattack attacks must be distinct names from {', '.join(STANDARD)}, got {chosen}")
        self.attacks = [a for a in STANDARD if a in chosen]  # the standard order
        self.version = "standard" if self.attacks == list(STANDARD) else "standard subset"
        self.fooled = {a: 0 for a in self.attacks}  # points each sub-attack fooled first, over all calls

    @classmethod
    def cost(cls, *, attacks: Sequence[str] | None = None, **options: object) -> Cost:
        chosen = list(STANDARD if attacks is None else attacks)
        return Cost(float(sum(GRADIENT_PASSES[a] for a in chosen)), float(sum(FORWARD_PASSES[a] for a in chosen)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from pyautoattack import AutoAttack as PackageAutoAttack

        with self._isolated(x.device):
            adversary = PackageAutoAttack(self._net, norm=_NORMS[self.norm], eps=self.eps, version="standard",
                                          seed=self._call_seed(), device=x.device)
            with torch.no_grad():
                n_classes = self._net(x[:1]).shape[1]
            targets = max(1, min(9, n_classes - 1))  # the standard 9 targets need >= 10 classes
            adversary.apgd_targeted.n_target_classes = targets
            adversary.fab.n_target_classes = targets
            x_adv, robust = x.clone(), torch.ones(len(y), dtype=torch.bool, device=x.device)
            after = {"clean": 1.0}
            for attack in self.attacks:  # the package's cascade, one sub-attack at a time
                idx = torch.nonzero(robust).flatten()
                if len(idx) == 0:
                    break
                adversary.attacks_to_run = [attack]
                adv, pred = adversary.run_standard_evaluation(x[idx], y[idx], batch_size=len(idx))
                fooled = pred != y[idx]
                x_adv[idx[fooled]] = adv[fooled]
                robust[idx[fooled]] = False
                self.fooled[attack] += int(fooled.sum())
                after[attack] = robust.double().mean().item()
            from pyautoattack import checks

            checks.check_square_sr(after, logger=adversary.logger)  # the package's own check, on the cascade
        return x_adv

    def report(self, n: int, n_attacked: int) -> dict[str, Any]:
        """Robust accuracy after each sub-attack (cumulative, as the package reports it), version, warnings.

        Args:
            n: Examples the attack covered.
            n_attacked: Of those, how many it was run on (robust going in).
        """
        left, after = n_attacked, {}
        for attack in self.attacks:
            left -= self.fooled[attack]
            after[attack] = left / max(n, 1)
        return {"package": self.package, "version": self.version, "after": after, "warnings": list(self.warnings)}


@ATTACKS.register("apgd")
class APGD(AutoAttack):
    """The cheap AutoAttack subsets: APGD-CE alone (default) or with APGD-T, standard settings."""

    name = "apgd"

    @classmethod
    def cost(cls, *, attacks: Sequence[str] | None = ("apgd-ce",), **options: object) -> Cost:
        return super().cost(attacks=attacks)

    def __init__(self, model: nn.Module, eps: float, *, attacks: Sequence[str] = ("apgd-ce",), **kwargs: Any) -> None:
        bad = [a for a in attacks if a not in ("apgd-ce", "apgd-t")]
        if bad:
            raise ConfigError(f"apgd attacks must be apgd-ce and/or apgd-t, got {list(attacks)}")
        super().__init__(model, eps, attacks=attacks, **kwargs)


@ATTACKS.register("square")
class Square(_PackageAttack):
    """Square Attack (Andriushchenko et al., ECCV 2020), gradient-free, through ``pyautoattack``.

    Args:
        model: Classifier returning logits.
        eps: Budget in [0, 1] units.
        n_queries: Queries per example (AutoAttack standard: 5000).
        p_init: Initial fraction of pixels changed (standard 0.8).
        restarts: Random restarts.
    """

    name = "square"
    OPTIONS = (Option("n_queries", SQUARE_QUERIES, "queries per example (AutoAttack's standard)", int, low=1),
               Option("norm", "linf", "the threat model's norm", str, choices=NORMS))

    def __init__(self, model: nn.Module, eps: float, *, n_queries: int = SQUARE_QUERIES, p_init: float = 0.8,
                 restarts: int = 1, norm: str = "linf", seed: int = 0, generator: torch.Generator | None = None,
                 model_mode: str = "eval", fold_bn: bool = True) -> None:
        # gradient-free: the folded view only saves forward time, it changes nothing
        super().__init__(model, eps, norm=norm, seed=seed, generator=generator, model_mode=model_mode,
                         fold_bn=fold_bn)
        check_range("n_queries", n_queries, 1)
        check_range("restarts", restarts, 1)
        self.n_queries, self.p_init, self.restarts = int(n_queries), float(p_init), int(restarts)

    @classmethod
    def cost(cls, *, n_queries: int = SQUARE_QUERIES, restarts: int = 1, **options: object) -> Cost:
        return Cost(0.0, float(n_queries * restarts))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from pyautoattack.square import SquareAttack

        with self._isolated(x.device), torch.no_grad():
            attack = SquareAttack(self._net, norm=_NORMS[self.norm], n_queries=self.n_queries, eps=self.eps,
                                  p_init=self.p_init, n_restarts=self.restarts, seed=self._call_seed(),
                                  verbose=False, device=x.device, resc_schedule=False)
            return attack.perturb(x, y)

    def report(self, n: int, n_attacked: int) -> dict[str, Any]:
        return {"package": self.package, "warnings": list(self.warnings)}
