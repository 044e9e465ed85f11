"""The one decorator for all jitted code in fastrnn.

Every entry point is declared once with a signature *template*: a function of the float type that
returns a Numba signature. ``@jit(template)`` gives an object indexed by dtype,
``_kernel[np.float32](...)``; the first use of a dtype compiles that one signature (or loads it from
the on-disk cache), so float32 users never compile float64 code and nothing compiles at import.
Every array in a template is a writable C-contiguous array (``Arr``); anything else (F order,
another dtype, read-only) is a TypeError, never a silently slower specialisation. Inputs are not
declared read-only on purpose: the entry points share their big helpers, and one array type per
argument means each helper compiles once, not once per caller (compile time is most of a cold
start). The Python wrappers pass copies of read-only inputs.

Big kernels that compiled code calls are called through their address (``Kernel.address``,
``function_at``): a direct call links the callee's code into the caller, where Numba optimises and
code-generates it again (and three more times inside a parallel loop). ``@task(template)``
declares one that only compiled code calls.

Switches (environment variables, read once at import):

- ``FASTRNN_NUMBA_CACHE=0`` turns the on-disk cache of compiled kernels off (default on);
- ``FASTRNN_FASTMATH=0`` turns fastmath off. The default flag set has no ``nnan``/``ninf``, so
  NaN and inf propagate as they do in NumPy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS numba calls, so threadpoolctl sees it)
from numba import types
from numba.core import cgutils
from numba.core.caching import CompileResultCacheImpl, FunctionCache
from numba.extending import intrinsic
from threadpoolctl import ThreadpoolController

import fastrnn.optim

CACHE = os.environ.get("FASTRNN_NUMBA_CACHE", "1").lower() not in ("0", "false", "no", "off")
FASTMATH = (set() if os.environ.get("FASTRNN_FASTMATH", "1").lower() in ("0", "false", "no", "off")
            else {"nsz", "arcp", "contract", "afn", "reassoc"})

i32, i64, f64, u8 = types.int32, types.int64, types.float64, types.uint8
void = types.void


def Arr(dtype, ndim):
    """Writable C-contiguous array type."""
    return types.Array(dtype, ndim, "C")


_FLOATS = {np.dtype(np.float32): types.float32, np.dtype(np.float64): types.float64}


class Kernel:
    """A jitted function compiled per float dtype on first use: ``kernel[dtype](*args)``."""

    def __init__(self, fn, template, parallel, wrappers=True):
        self.fn, self.template, self.parallel, self.wrappers = fn, template, parallel, wrappers
        self._compiled, self._addresses = {}, {}
        self._lock = threading.Lock()
        self.__name__, self.__doc__ = fn.__name__, fn.__doc__

    def __getitem__(self, dtype):
        dtype = np.dtype(dtype)
        compiled = self._compiled.get(dtype)
        if compiled is None:
            with self._lock:                       # two threads must not compile the same kernel
                compiled = self._compiled.get(dtype)
                if compiled is None:
                    compiled = _njit(self.fn, self.parallel, wrappers=self.wrappers)
                    compiled.compile(self.template(_FLOATS[dtype]))
                    compiled.disable_compile()     # as with explicit signatures: no other types
                    self._compiled[dtype] = compiled
        return compiled

    def is_ready(self, dtype):
        """True when the ``dtype`` version needs no compiling: it is compiled in this process, or
        the on-disk cache lists it (a damaged entry is still compiled on use)."""
        dtype = np.dtype(dtype)
        if dtype in self._compiled:
            return True
        dispatcher = _njit(self.fn, self.parallel, wrappers=self.wrappers)
        cache = getattr(dispatcher, "_cache", None)
        return isinstance(cache, _TolerantCache) and cache.lists(self.template(_FLOATS[dtype]),
                                                                 dispatcher.targetctx)

    def address(self, dtype):
        """The machine address of the compiled ``dtype`` version (Numba's calling convention), for
        compiled callers that call it through ``function_at``; compiles it on first use."""
        dtype = np.dtype(dtype)
        address = self._addresses.get(dtype)
        if address is None:
            result = self[dtype].overloads[self.template(_FLOATS[dtype]).args]
            address = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
            self._addresses[dtype] = address
        return address

    def __call__(self, dtype, *args):
        """Run the ``dtype`` version, with BLAS kept to one thread (see ``serial_blas``)."""
        numba.get_num_threads()   # launches the threading layer: a cached kernel may not (numba#8578)
        with serial_blas():
            return self[dtype](*args)


def jit(template, parallel=False):
    """Declare a public-facing kernel with a signature template (``float type -> signature``)."""
    return lambda fn: Kernel(fn, template, parallel)


def task(template):
    """Declare a serial kernel that only compiled code calls, through ``Kernel.address`` and
    ``function_at(template)`` (so it has no wrapper for Python)."""
    return lambda fn: Kernel(fn, template, False, wrappers=False)


def function_at(template):
    """An intrinsic ``at(address, like)``: the function compiled from ``template(like.dtype)`` at
    ``address`` (from ``Kernel.address``), as a first-class function value to call.

    A caller that calls a jitted function directly links in its code and optimises and
    code-generates all of it again (once more per level of callers, and several times more inside
    a parallel loop); a call through an address compiles nothing twice. Its price is no inlining
    across the call, which is nothing for a call that does a whole chunk of work.
    """
    @intrinsic
    def at(typingctx, address, like):
        fnty = types.FunctionType(template(like.dtype))

        def codegen(context, builder, sig, args):
            fn = cgutils.create_struct_proxy(fnty)(context, builder)
            fn.jit_addr = builder.inttoptr(args[0], cgutils.voidptr_t)
            fn.c_addr = fn.py_addr = cgutils.voidptr_t(None)
            return fn._getvalue()

        return fnty(address, like), codegen

    return at


@intrinsic
def address_of(typingctx, value):
    """The address of a copy of ``value`` on the caller's stack, for a callee to read with
    ``value_at``: valid until the caller returns, and only while the caller keeps ``value`` alive
    (the copy holds no references: a caller that does not use ``value`` again must end with
    ``keep_alive(value)``, or Numba frees the arrays in it after their last visible use). Passing
    a large tuple of arrays by address keeps a parallel loop's arguments to a few scalars (Numba
    compiles code per argument of the loop)."""
    def codegen(context, builder, sig, args):
        slot = cgutils.alloca_once_value(builder, args[0])
        return builder.ptrtoint(slot, context.get_value_type(types.int64))

    return types.int64(value), codegen


@intrinsic
def keep_alive(typingctx, value):
    """Nothing, except that ``value`` counts as used here, so Numba keeps it alive until here."""
    def codegen(context, builder, sig, args):
        return context.get_dummy_value()

    return types.none(value), codegen


def _borrowed(context, builder, ty, value):
    """``value`` (an array of type ``ty``) without its memory manager: no reference counting."""
    array = context.make_array(ty)(context, builder, value)
    array.meminfo = cgutils.get_null_value(array.meminfo.type)
    return array._getvalue()


@intrinsic
def borrow(typingctx, array):
    """``array`` as a borrowed array: the caller keeps it alive, and neither it nor its views
    carry a reference count (as inside a parallel loop). Otherwise every view taken in a loop adds
    to and subtracts from the count of the array it views, atomically, and two threads doing that
    to one array fight over one cache line (a fifth of a training step, measured)."""
    def codegen(context, builder, sig, args):
        return _borrowed(context, builder, sig.args[0], args[0])

    return array(array), codegen


def value_at(template):
    """An intrinsic ``at(address, like)``: the tuple of arrays of type ``template(like.dtype)``
    stored at ``address`` by ``address_of``, as borrowed arrays (see ``borrow``)."""
    @intrinsic
    def at(typingctx, address, like):
        ty = template(like.dtype)

        def codegen(context, builder, sig, args):
            ptr = builder.inttoptr(args[0], context.get_value_type(ty).as_pointer())
            value = builder.load(ptr)
            for i, item in enumerate(ty.types):
                value = builder.insert_value(
                    value, _borrowed(context, builder, item, builder.extract_value(value, i)), i)
            return value

        return ty(address, like), codegen

    return at


def helper(fn=None, parallel=False, inline="never"):
    """A jitted helper called from kernels (compiled for whatever types its callers pass).

    ``inline="always"`` inlines it into its callers at the Numba IR level, so it is optimised once,
    as part of the caller, instead of once on its own and again in each caller that links it (only
    worth it for a helper with one caller: inlined code is typed and optimised at every call site).
    Helpers get no CPython or C wrapper: they are never called from Python.
    """
    if fn is None:
        return lambda f: _njit(f, parallel, inline, wrappers=False)
    return _njit(fn, parallel, inline, wrappers=False)


def sources_digest(paths):
    """A digest of the files at ``paths`` (sorted by name)."""
    digest = hashlib.sha256()
    for path in sorted(map(Path, paths)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


# The compiled code of a kernel depends on every kernel module (helpers, intrinsics, constants) and
# on fastrnn.optim's constants, but Numba keys a cached kernel on its own bytecode only.
_SOURCES = sources_digest([*Path(__file__).parent.glob("*.py"), fastrnn.optim.__file__])


class _FilledReadOnly:
    """Cache-locator mixin: a cache directory that cannot be written is still used when it holds
    an index for the function already (a filled read-only cache: a shared or packaged install).

    Numba's locators accept only a directory they can write a file into; a read-only one is
    skipped for the next (an empty user cache, or none: then nothing is cached and every process
    compiles everything again). Loading needs no writing; saving into it fails and is ignored.
    """

    def __init__(self, py_func, py_file):
        super().__init__(py_func, py_file)
        self._index_glob = f"{Path(py_file).stem}.{py_func.__qualname__}-*.nbi"

    def ensure_cache_path(self):
        try:
            super().ensure_cache_path()
        except OSError:
            if not any(Path(self.get_cache_path()).glob(self._index_glob)):
                raise


class _TolerantImpl(CompileResultCacheImpl):
    _locator_classes = [type(cls.__name__, (_FilledReadOnly, cls), {})
                        for cls in CompileResultCacheImpl._locator_classes]


class _TolerantCache(FunctionCache):
    """Numba's on-disk cache, except that a file it cannot read or write is a cache miss, an
    entry compiled from other kernel sources is not found (``_SOURCES`` is part of its key), and
    a read-only cache directory that holds the function is used (``_FilledReadOnly``).

    Numba unpickles its index and data files without a fallback: a damaged file (a crash while
    writing, a full disk, a bad copy) raises UnpicklingError/EOFError/... on the first call, and a
    failed write raises too. Here a damaged file means: empty the index, compile, save afresh; a
    failed write means: compiled in memory only.
    """

    _impl_class = _TolerantImpl

    def _index_key(self, sig, codegen):
        return super()._index_key(sig, codegen) + (_SOURCES,)

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception:                            # noqa: BLE001 - any damage is a miss
            with contextlib.suppress(Exception):
                self.flush()                         # a fresh, empty index: the save repairs it
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception:                            # noqa: BLE001 - not cached, still compiled
            pass

    def lists(self, sig, target_context):
        """True if the index has an entry for ``sig`` (the compiled code itself is not read)."""
        try:
            return self._index_key(sig, target_context.codegen()) in self._cache_file._load_index()
        except Exception:                            # noqa: BLE001 - unreadable: not listed
            return False


def _njit(fn, parallel, inline="never", wrappers=True):
    """``numba.njit`` with the project's flags and the tolerant on-disk cache (when CACHE is on
    and Numba finds a writable cache directory; without one it compiles in memory every run).

    ``parallel`` turns on explicit ``prange`` loops only: Numba's automatic parallelisation of
    array expressions would make every ``np.zeros`` or ``a += b`` a parallel region of its own, each
    compiled and linked separately (seconds of a cold start for work that is not worth threads).
    """
    if parallel:
        parallel = dict.fromkeys(("comprehension", "reduction", "inplace_binop", "setitem", "numpy",
                                  "stencil", "fusion"), False)
    dispatcher = numba.njit(fastmath=FASTMATH or False, error_model="numpy", nogil=True,
                            parallel=parallel, inline=inline, no_cpython_wrapper=not wrappers,
                            no_cfunc_wrapper=not wrappers)(fn)
    if CACHE:
        try:
            dispatcher._cache = _TolerantCache(fn)
        except RuntimeError:                         # "cannot cache function": no locator
            pass
    return dispatcher


_blas = ThreadpoolController()
_blas_lock = threading.Lock()
_blas_state = {"depth": 0, "limiter": None}


@contextlib.contextmanager
def serial_blas():
    """Run BLAS single-threaded inside this block (re-entrant, process-wide).

    The kernels call BLAS from inside their own parallel loops, one call per thread; a BLAS that
    started threads of its own there would oversubscribe the cores (numba/numba#4585).
    """
    with _blas_lock:
        if _blas_state["depth"] == 0:
            _blas_state["limiter"] = _blas.limit(limits=1, user_api="blas")
        _blas_state["depth"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_state["depth"] -= 1
            if _blas_state["depth"] == 0:
                _blas_state["limiter"].restore_original_limits()
