"""Compile once, run many: the engine's compiled programs are shared between federations.

A :class:`~pppml_jax.federation.engine.Federation` keeps its programs in a
:class:`~pppml_jax.federation.training.Trainer` and an
:class:`~pppml_jax.federation.evaluation.Evaluator`. Both hold only *static* pieces: the
algorithm's functions, the loss and metric, the optimizers' factories and integer or boolean
options. Seeds, learning rates and every other float hyper-parameter enter the programs as
arguments (``hp``, key data). Two federations whose static pieces are structurally equal
therefore get the same Trainer and Evaluator from :func:`shared` and run the same jitted
programs: the second run with another seed or learning rate compiles nothing.

"Structurally equal" (:func:`fingerprint`): functions compare by code, closure contents,
defaults and module, recursively, so ``pj.algorithms.fedavg()`` built twice, a lambda defined
in a loop, or ``model.apply`` bound twice are one key. Values compare with ``==`` when
hashable and by identity otherwise (arrays captured by a loss are never hashed).

Across processes, JAX's persistent compilation cache stores the compiled executables on disk:
:func:`enable_compilation_cache` turns it on (the ``pppml`` command line does by default).
"""

from __future__ import annotations

import collections
import inspect
import logging
import os
import threading
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)

_MAX_DEPTH = 12
_MAX_ENTRIES = 64
_cache: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
_lock = threading.Lock()
_ATOMS = (str, bytes, int, float, complex, bool, type(None), types.CodeType, type)


def _function(fn: types.FunctionType, depth: int) -> tuple:
    cells = ()
    if fn.__closure__:
        cells = tuple(_cell(c, depth) for c in fn.__closure__)
    return (
        "fn",
        fn.__code__,
        fn.__module__,
        id(fn.__globals__),
        fingerprint(fn.__defaults__, depth + 1),
        fingerprint(fn.__kwdefaults__, depth + 1),
        cells,
    )


def _cell(cell: Any, depth: int) -> Any:
    try:
        contents = cell.cell_contents
    except ValueError:  # an empty cell (a name assigned after the closure was made)
        return ("empty",)
    return fingerprint(contents, depth + 1)


def fingerprint(obj: Any, depth: int = 0) -> Any:
    """A hashable value equal for structurally equal static pieces (module docstring).

    Args:
      obj: a function, a bound method, a ``functools.partial``, a (named) tuple, list or
        mapping of such, or any value.
      depth: the recursion depth reached (deeper objects compare by identity).

    Returns:
      Nested tuples of hashable atoms; identity (``("id", type, id)``) for unhashable
      values. The cache entry that stores a key keeps the objects it names alive, so an id
      in a stored key is never reused by another object.
    """
    if isinstance(obj, _ATOMS):
        return (type(obj).__name__, obj)
    if depth > _MAX_DEPTH:
        return ("id", type(obj).__name__, id(obj))
    if isinstance(obj, types.FunctionType):
        return _function(obj, depth)
    if inspect.ismethod(obj):
        return (
            "method",
            fingerprint(obj.__func__, depth + 1),
            fingerprint(obj.__self__, depth + 1),
        )
    if isinstance(obj, (tuple, list)):
        return (type(obj), tuple(fingerprint(x, depth + 1) for x in obj))
    if isinstance(obj, Mapping):
        items = sorted(((repr(k), fingerprint(v, depth + 1)) for k, v in obj.items()), key=repr)
        return (type(obj), tuple(items))
    func = getattr(obj, "func", None)  # functools.partial and look-alikes
    if func is not None and hasattr(obj, "args") and hasattr(obj, "keywords"):
        return (
            "partial",
            fingerprint(func, depth + 1),
            fingerprint(tuple(obj.args), depth + 1),
            fingerprint(dict(obj.keywords), depth + 1),
        )
    try:
        hash(obj)
    except TypeError:
        return ("id", type(obj).__name__, id(obj))
    return ("value", type(obj), obj)


def algorithm_key(algorithm: Any) -> tuple:
    """The static part of an :class:`~pppml_jax.algorithms.Algorithm` value.

    Every field but ``hparams`` (whose *values* are traced arguments; only their names are
    static) and ``secure`` (options of the host-side ring, outside the compiled programs).
    """
    fields = algorithm._asdict()
    names = tuple(sorted(fields.pop("hparams")))
    fields.pop("secure")
    return ("algorithm", names, fingerprint(fields))


_MAP_FRACTION = 0.5


def memory_maps() -> tuple[int, int] | None:
    """``(memory maps this process holds, the kernel's per-process limit)``, or None off Linux.

    XLA:CPU maps the machine code of every compiled kernel separately (about 1,000 maps for
    one DenseNet3D gradient program), and Linux refuses new maps past ``vm.max_map_count``
    (65,530 by default): LLVM then fails with "Cannot allocate memory" and the process dies,
    however much RAM is free.
    """
    try:
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
        count = 0
        with open("/proc/self/maps", "rb") as f:
            while chunk := f.read(1 << 20):
                count += chunk.count(b"\n")
    except (OSError, ValueError):
        return None
    return count, limit


_released_at: list[int] = []  # the map count after the last release (none yet: empty)


def release_if_near_map_limit(fraction: float = _MAP_FRACTION) -> bool:
    """Drops every shared program and JAX's compiled executables when maps run short.

    Releases when the process holds more than ``fraction`` of the kernel's memory-map limit,
    or, after an earlier release that left ``a`` maps in use, more than ``a`` plus ``fraction``
    of what was then left (so programs that stay alive never make every later build release
    again). Every jitted function, a live Federation's included, compiles again when next
    called; results never change, only compile time. Returns whether it released.
    """
    usage = memory_maps()
    if usage is None:
        return False
    count, limit = usage
    floor = _released_at[-1] if _released_at else 0
    if count <= floor + fraction * (limit - floor):
        return False
    import gc

    import jax

    clear()
    jax.clear_caches()
    gc.collect()
    after = memory_maps()
    _released_at[:] = [after[0] if after else count]
    logger.info(
        "released compiled programs: %d of %d memory maps in use, %d after",
        count,
        limit,
        _released_at[0],
    )
    return True


def shared(kind: str, key: tuple, build: Callable[[], T]) -> T:
    """The object cached under ``(kind, key)``, built by ``build()`` on a miss.

    The last 64 entries are kept (least recently used dropped first); each holds its jitted
    programs and, through them, JAX's compiled executables. Before a miss builds, every shared
    program is released if the process holds more than half the memory maps Linux allows
    (:func:`release_if_near_map_limit`): a long benchmark of many algorithms on a 3-D model
    otherwise runs out of maps and crashes.
    """
    full = (kind, key)
    with _lock:
        if full in _cache:
            _cache.move_to_end(full)
            return _cache[full]
    release_if_near_map_limit()
    value = build()
    with _lock:
        value = _cache.setdefault(full, value)
        _cache.move_to_end(full)
        while len(_cache) > _MAX_ENTRIES:
            _cache.popitem(last=False)
    return value


def clear() -> None:
    """Forgets every shared Trainer and Evaluator (their programs compile again when used)."""
    with _lock:
        _cache.clear()


def cache_size() -> int:
    """How many Trainers and Evaluators are shared now."""
    with _lock:
        return len(_cache)


def enable_compilation_cache(path: str | os.PathLike, *, min_compile_time_s: float = 0.5) -> Path:
    """Turns on JAX's persistent compilation cache in this process.

    Programs that take at least ``min_compile_time_s`` seconds to compile are written to
    ``path`` and read back by later processes instead of being compiled again (same JAX
    version, backend and program). Library code never calls this: the application decides.
    May be called after programs were compiled; only later compilations are stored.

    Args:
      path: the cache directory (created). The ``pppml`` command line uses
        ``pppml_jax.data.paths.cache_dir() / "xla"``; pass it to share that cache.
      min_compile_time_s: programs compiling faster than this are not stored (seconds).

    Returns:
      The directory used.
    """
    import jax

    directory = Path(path).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:  # a process that compiled before decided "no cache"; let it decide again
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
        pass
    return directory
