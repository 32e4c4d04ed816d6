"""Bit flips in a quantized model's stored weights: how many flipped bits bring its clean accuracy to
chance (+1 point).

A deployed quantized model keeps its weights in memory as integer words (:mod:`robquant.quant.storage`);
a fault-injection attacker (RowHammer, a laser) flips some of their bits. Two attackers:

- **search**: the progressive bit search of Rakin et al. (ICCV 2019, "Bit-Flip Attack: Crushing Neural
  Network with Progressive Bit Search"). On an attack batch, per flip: the loss's gradient with respect
  to the weights gives each bit's first-order effect (gradient x the weight change its flip makes);
  in each layer the bit of largest effect is a candidate (in-layer search); each candidate is tried
  and the one that raises the batch's loss most is kept (cross-layer search). When no candidate
  raises the loss, each layer's 2, 3, ... best bits are tried together, as Rakin et al. escalate, so
  a flip never lowers the loss it was chosen to raise.
- **random**: bits drawn uniformly from every stored bit, the baseline.

Each flip changes one bit of one word and any word decodes to a weight the layer can hold, so a
flipped model is still a valid integer model: it exports and runs like the original. The count of
flips to break a model is taken on evaluation examples the attack batch never contains, capped
(the cap is recorded; a model not broken within it is censored there). Random flips are checked at
1, 2, 4, ... flips and the count bisected in the last interval (accuracy taken as falling with more
flips), which takes 2 log2(cap) evaluations instead of cap.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robquant.data import to_unit
from robquant.defaults import BITFLIP_ATTACK_BATCH as ATTACK_BATCH
from robquant.defaults import BITFLIP_METHODS as METHODS
from robquant.defaults import BITFLIP_RANDOM_CAP as RANDOM_CAP
from robquant.defaults import BITFLIP_REPEATS
from robquant.defaults import BITFLIP_SEARCH_CAP as SEARCH_CAP
from robquant.errors import ConfigError, check_range
from robquant.progress import NULL_PROGRESS, Progress
from robquant.quant.integer import stored_weights
from robquant.quant.modules import QuantConv2d, QuantLinear
from robquant.quant.ste import exact_float32

MARGIN = 0.01  # broken: clean accuracy at most chance (the largest class's share) + 1 point


@dataclass(frozen=True)
class Flip:
    """One flipped bit: ``bit`` of the word at flat ``index`` of ``layer``'s weights, ``before`` and ``after``."""

    layer: str
    index: int
    bit: int
    before: int
    after: int


class FlippableModel:
    """A copy of a quantized model whose stored words can be flipped. Every quantized layer is frozen
    (its weights stored as they compute) and its words kept beside it; :meth:`flip` changes one bit of
    one word and writes the weight it decodes to. The model given is left untouched.

    Raises:
        ConfigError: a model without quantized weights, or weights with no one word per weight.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.layers: dict[str, tuple[nn.Module, Any]] = {}
        for name, m in self.model.named_modules():
            if isinstance(m, (QuantConv2d, QuantLinear)) and m.weight_quant is not None and m.weight_quant.bits < 32:
                m.freeze()
                self.layers[name] = (m, stored_weights(m, name))
        if not self.layers:
            raise ConfigError("bit flips need quantized weights: this model stores its weights in full precision")
        self._base = {name: store.words.clone() for name, (_, store) in self.layers.items()}
        self._original = {name: m.weight.detach().clone() for name, (m, _) in self.layers.items()}

    @property
    def total_bits(self) -> int:
        """Every stored bit of every quantized layer."""
        return sum(store.words.numel() * store.bits for _, store in self.layers.values())

    def flip(self, layer: str, index: int, bit: int) -> Flip:
        """Flip ``bit`` of the word at flat ``index`` of ``layer`` and write the weight it decodes to."""
        m, store = self.layers[layer]
        check_range("bit", bit, 0, store.bits - 1)
        words = store.words.view(-1)
        before = int(words[index])
        words[index] = before ^ (1 << bit)
        with torch.no_grad():
            if int(words[index]) == int(self._base[layer].view(-1)[index]):  # back as it was: the weight as it was
                value = self._original[layer].view(-1)[index]
            else:
                value = store.decode(store.words).view(-1)[index].to(m.weight.dtype)
            m.weight.view(-1)[index] = value
        return Flip(layer, index, bit, before, int(words[index]))

    def reset(self) -> None:
        """Every word and weight as they were."""
        with torch.no_grad():
            for name, (m, store) in self.layers.items():
                store.words.copy_(self._base[name])
                m.weight.copy_(self._original[name])

    def words(self, layer: str) -> torch.Tensor:
        """``layer``'s stored words now (a copy)."""
        return self.layers[layer][1].words.clone()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    with torch.no_grad():
        right = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                    for i in range(0, len(x), batch_size))
    return right / max(len(x), 1)


class _Cached:
    """A module's ``forward`` that returns what it computed before (a copy: a later in-place op must
    not change it)."""

    def __init__(self, output: torch.Tensor) -> None:
        self.output = output

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.output.clone()


class PrefixRerun:
    """One forward on a batch, kept so that a change to one layer reruns only what follows it.

    The forward is recorded module by module (when each call started and ended, and its output).
    :meth:`loss` with ``layer`` changed replaces every module called once whose call ended before
    ``layer``'s first call started by its recorded output and runs the model: what ran before the
    layer gets the same inputs and gives the same outputs, so the loss is the full forward's, bit for
    bit (``tests/test_bitflip.py``), at the cost of the rest. A model whose layers run in any order
    works: only what provably ran before is skipped; a module called twice always runs.

    Only the outputs a rerun uses are kept: those of the modules that had ended when one of ``layers``
    (default: any module) started while their caller had not (inside a skipped module nothing runs),
    so the memory is about one forward's activations along the way, not every module's.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, layers: Sequence[nn.Module] | None = None) -> None:
        self.model, self.x = model, x
        self.calls: dict[nn.Module, list[Any]] = {}  # module -> [first start, last end, output, calls]
        targets = None if layers is None else set(layers)
        clock = iter(range(1 << 62))
        ended: list[list[nn.Module]] = [[]]  # per open call: the modules it called that have ended
        keep: set[nn.Module] = set()

        def before(module: nn.Module, args: Any) -> None:
            call = self.calls.setdefault(module, [next(clock), None, None, 0])
            call[3] += 1
            if targets is None or module in targets:  # a rerun from here skips these
                keep.update(m for done in ended for m in done)
            ended.append([])

        def after(module: nn.Module, args: Any, output: Any) -> None:
            for m in ended.pop():
                if m not in keep:
                    self.calls[m][2] = None  # inside a call that ended: no rerun uses it
            call = self.calls[module]
            # a copy: an in-place op after the call (``out += shortcut``) must not change the record
            call[1], call[2] = next(clock), output.clone() if isinstance(output, torch.Tensor) else None
            ended[-1].append(module)

        handles = []
        for module in model.modules():
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
        try:
            with torch.no_grad():
                model(x)
        finally:
            for h in handles:
                h.remove()

    def loss(self, layer: nn.Module, y: torch.Tensor) -> float:
        """The cross-entropy on the batch now, ``layer`` (only it) having changed since the recording."""
        start = self.calls[layer][0] if layer in self.calls else -1
        skip = [m for m, (_, end, out, n) in self.calls.items()
                if n == 1 and out is not None and end < start and "forward" not in m.__dict__]
        for m in skip:
            m.forward = _Cached(self.calls[m][2])
        try:
            with torch.no_grad():
                return float(F.cross_entropy(self.model(self.x), y))
        finally:
            for m in skip:
                del m.forward


def search_step(fm: FlippableModel, x: torch.Tensor, y: torch.Tensor, limit: int | None = None) -> list[Flip]:
    """One iteration of the progressive bit search on the attack batch ``(x, y)``: in each layer the
    ``k`` bits whose flips raise the loss most to first order (in-layer search), then of the layers the
    one whose ``k`` flips raise it most (cross-layer search: each candidate's loss computed by rerunning
    the model from its layer on, :class:`PrefixRerun`). ``k`` starts at 1 and grows while no layer's
    flips raise the loss above its present value (Rakin et al.'s escalation), up to ``limit`` bits.

    Returns:
        The flips made (``k`` of them), or none when no bit of any layer raises the loss to first order.
    """
    params = [m.weight for m, _ in fm.layers.values()]
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    loss = F.cross_entropy(fm.model(x), y)
    loss.backward()
    now = float(loss.detach())
    ranked = {}  # layer -> its bits by first-order gain, best first: (index, bit) with a positive gain
    for name, (m, store) in fm.layers.items():
        grad, weights = m.weight.grad.double().view(-1), store.decode(store.words).view(-1)
        gains = torch.stack([grad * (store.decode(store.words ^ (1 << bit)).view(-1) - weights)
                             for bit in range(store.bits)])  # (bits, weights)
        flat = gains.view(-1)  # only the best ``limit`` bits can be tried: a top-k, not a sort of every bit
        values, order = flat.topk(min(limit or flat.numel(), flat.numel()))
        order = order[values > 0]
        n = gains.shape[1]
        ranked[name] = [(int(i) % n, int(i) // n) for i in order]
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    prefix = PrefixRerun(fm.model, x, [m for m, _ in fm.layers.values()])
    k, most = 0, max((len(r) for r in ranked.values()), default=0)
    if limit is not None:
        most = min(most, limit)
    while k < most:
        k += 1
        tried = []
        for name, bits in ranked.items():  # the cross-layer search: each layer's k best bits, tried
            if len(bits) < k:
                continue
            for index, bit in bits[:k]:
                fm.flip(name, index, bit)
            tried.append((prefix.loss(fm.layers[name][0], y), name))
            for index, bit in reversed(bits[:k]):
                fm.flip(name, index, bit)
        best, name = max(tried, key=lambda t: t[0])
        if best > now or k == most:
            return [fm.flip(name, index, bit) for index, bit in ranked[name][:k]]
    return []


def random_flips(fm: FlippableModel, count: int, generator: torch.Generator) -> list[tuple[str, int, int]]:
    """``count`` bits drawn uniformly from every stored bit (a bit may come twice): (layer, index, bit)."""
    layers = list(fm.layers.items())
    sizes = torch.tensor([store.words.numel() * store.bits for _, (_, store) in layers], dtype=torch.float64)
    picks = torch.multinomial(sizes, count, replacement=True, generator=generator).tolist()
    out = []
    for k in picks:
        name, (_, store) = layers[k]
        out.append((name, int(torch.randint(store.words.numel(), (1,), generator=generator)),
                    int(torch.randint(store.bits, (1,), generator=generator))))
    return out


@exact_float32()
def flips_to_break(model: nn.Module, attack: tuple[torch.Tensor, torch.Tensor], held: tuple[torch.Tensor, torch.Tensor],
                   *, method: str = "search", target: float, cap: int | None = None, seed: int = 0,
                   progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Flip bits of ``model``'s stored weights until its accuracy on the held-out examples ``held`` is
    at most ``target``, or ``cap`` flips.

    Args:
        attack: The search's batch (images in [0, 1], labels), on the model's device.
        held: The examples accuracy is judged on (none of them in ``attack``).
        method: ``search`` (progressive bit search) or ``random``.
        target: Accuracy at or below which the model counts as broken (chance + 1 point).
        cap: At most this many flips (default :data:`SEARCH_CAP` / :data:`RANDOM_CAP`).
        seed: The random baseline's draws.

    Returns:
        ``method``, ``flips`` (to break; None when not broken within ``cap``), ``cap``, ``broken``,
        ``target``, ``accuracy_before``, ``accuracy_after`` (after ``flips``, else after ``cap``),
        ``trace`` (``[flips, accuracy]`` at each count checked), ``bits`` (the flips made, search: all;
        random: the first ``flips``), ``layers`` (flips per layer), ``total_bits``, ``escalated`` (search
        iterations that flipped more than one bit), ``seconds``.
    """
    if method not in METHODS:
        raise ConfigError(f"bitflip method must be one of {', '.join(METHODS)}, got {method!r}")
    cap = check_range("bitflip cap", cap if cap is not None else (SEARCH_CAP if method == "search" else RANDOM_CAP), 1)
    t0 = time.perf_counter()
    fm = FlippableModel(model)
    before = _accuracy(fm.model, *held)
    trace: list[list[float]] = [[0, before]]
    flips: list[Flip] = []
    escalated = 0  # search iterations that flipped more than one bit
    if method == "search":
        with progress.task(f"bit search (to {100 * target:.0f} %, at most {cap} flips)", cap) as task:
            while len(flips) < cap and trace[-1][1] > target:
                step = search_step(fm, *attack, limit=cap - len(flips))
                if not step:  # no bit raises the loss to first order: the search has nowhere to go
                    break
                flips += step
                escalated += len(step) > 1
                trace.append([len(flips), _accuracy(fm.model, *held)])
                task.advance(len(step))
        broken = trace[-1][1] <= target
        n = len(flips) if broken else None
        after = trace[-1][1]
    else:
        draws = random_flips(fm, cap, torch.Generator().manual_seed(seed))

        def accuracy_at(k: int) -> float:
            fm.reset()
            for d in draws[:k]:
                fm.flip(*d)
            acc = _accuracy(fm.model, *held)
            trace.append([k, acc])
            return acc

        checks = sorted({min(2**i, cap) for i in range(int(math.log2(cap)) + 2)})
        lo, n = 0, None
        with progress.task(f"random bit flips (to {100 * target:.0f} %, at most {cap})", len(checks)) as task:
            for k in checks:
                task.advance()
                if accuracy_at(k) <= target:
                    n = k
                    break
                lo = k
        if n is not None:
            while n - lo > 1:  # bisect: the fewest flips of this draw that break it
                mid = (lo + n) // 2
                if accuracy_at(mid) <= target:
                    n = mid
                else:
                    lo = mid
            fm.reset()
            flips = [fm.flip(*d) for d in draws[:n]]
        broken = n is not None
        trace.sort()
        after = next(a for k, a in trace if k == (n if broken else cap))
    layers: dict[str, int] = {}
    for f in flips:
        layers[f.layer] = layers.get(f.layer, 0) + 1
    return {"method": method, "flips": n, "cap": cap, "broken": broken, "target": target,
            "accuracy_before": before, "accuracy_after": after, "trace": trace, "bits": [asdict(f) for f in flips],
            "layers": layers, "total_bits": fm.total_bits, "escalated": escalated, "seed": seed, "seconds": time.perf_counter() - t0}


def chance(labels: torch.Tensor, num_classes: int) -> float:
    """Chance accuracy on these examples: what the best constant answer gets, the largest class's share
    (a broken model often answers one class; on a balanced set, 1 / classes)."""
    return float(torch.bincount(labels.cpu(), minlength=num_classes).max()) / max(len(labels), 1)


def check_attack_pool(n: int, attack_batch: int, size: int) -> None:
    """Refuse an attack batch that cannot come from outside the ``n`` judged examples of a test split
    of ``size`` examples.

    Raises:
        ConfigError: ``n + attack_batch > size``, naming both and what would fit.
    """
    if size - min(n, size) < attack_batch:
        raise ConfigError(f"bitflip: n ({n}) + attack_batch ({attack_batch}) exceed the test split's {size} examples: "
                          "the attack batch must come from outside the judged examples; lower n to at most "
                          f"{max(size - attack_batch, 0)} or attack_batch to at most {max(size - n, 0)}")


def bitflip_evaluation(model: nn.Module, dataset: Any, *, n: int | None = None, methods: Sequence[str] = METHODS,
                       seeds: Sequence[int] = tuple(range(BITFLIP_REPEATS)), attack_batch: int = ATTACK_BATCH,
                       search_cap: int = SEARCH_CAP, random_cap: int = RANDOM_CAP, device: torch.device | str = "cpu",
                       progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Flips to break ``model`` (clean accuracy at most chance + 1 point on its first ``n`` test
    examples, chance being the largest class's share there: :func:`chance`) per method and seed;
    each seed draws its own attack batch of ``attack_batch`` examples from the test examples after
    the first ``n``, never from the judged ones.

    Returns:
        ``target``, ``n``, ``attack_batch``, ``runs`` (one :func:`flips_to_break` result per method and seed,
        without its bits), and per method a ``summary``: flips per seed (None: not broken within the cap),
        their mean and 95 % t-interval over the seeds that broke it, and how many did not.

    Raises:
        ConfigError: the test split holds fewer than ``n + attack_batch`` examples (the attack batch
            would overlap the judged examples).
    """
    device = torch.device(device)
    held_set = dataset.head(n)
    n = len(held_set)
    if n == 0:
        raise ConfigError("bit flips need at least one test example")
    check_attack_pool(n, attack_batch, len(dataset))
    images = to_unit(dataset.images)
    held = (images[:n].to(device), dataset.labels[:n].to(device))
    target = chance(held[1], dataset.num_classes) + MARGIN
    pool = torch.arange(n, len(dataset))
    runs, summary = [], {}
    for method in methods:
        for seed in seeds:
            pick = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:attack_batch]]
            attack = (images[pick].to(device), dataset.labels[pick].to(device))
            run = flips_to_break(model, attack, held, method=method, target=target, seed=seed, progress=progress,
                                 cap=search_cap if method == "search" else random_cap)
            runs.append({k: v for k, v in run.items() if k != "bits"} | {"n_bits_recorded": len(run["bits"])})
        summary[method] = flips_summary([r["flips"] for r in runs if r["method"] == method],
                                        search_cap if method == "search" else random_cap)
    return {"target": target, "n": n, "attack_batch": attack_batch, "disjoint": True,
            "runs": runs, "summary": summary}


def flips_summary(flips: Sequence[int | None], cap: int) -> dict[str, Any]:
    """Flips per seed, their mean and 95 % t-interval over the seeds that broke the model, and how
    many seeds did not within ``cap`` (censored: the mean then understates the flips needed)."""
    from scipy import stats

    done = [f for f in flips if f is not None]
    mean = sum(done) / len(done) if done else None
    ci = None
    if len(done) > 1:
        sd = (sum((f - mean) ** 2 for f in done) / (len(done) - 1)) ** 0.5
        half = float(stats.t.ppf(0.975, len(done) - 1)) * sd / len(done) ** 0.5
        ci = [mean - half, mean + half]
    return {"flips": list(flips), "mean": mean, "ci95": ci, "censored": len(flips) - len(done), "cap": cap}


__all__ = ["ATTACK_BATCH", "FlippableModel", "Flip", "METHODS", "PrefixRerun", "RANDOM_CAP", "SEARCH_CAP",
           "bitflip_evaluation", "chance", "check_attack_pool", "flips_summary", "flips_to_break", "random_flips", "search_step"]
