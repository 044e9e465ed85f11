"""``matmul``: a matrix product straight into BLAS ``gemm``, for the kernels.

``np.dot(a, b, out)`` inside jitted code compiles a fair amount of checking and error-formatting
code for every combination of array types it meets; at this project's dozen call sites that was
several seconds of every cold start. Here one intrinsic calls the ``gemm`` wrapper that Numba's own
``np.dot`` uses (``numba_xxgemm``, which reaches SciPy's BLAS, so the compiled code stays cacheable),
and the checks are a few comparisons. It also accumulates (``beta = 1``) and reads transposed views
(Fortran-ordered arrays such as ``a.T``) without copying them.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

from ._jit import helper

_KINDS = {types.float32: "s", types.float64: "d"}


@intrinsic
def _xxgemm(typingctx, a, b, out, beta):
    """``out = a @ b + beta * out`` for 2-d float arrays of one dtype, ``a`` and ``b`` C- or
    F-contiguous, ``out`` C-contiguous, every dimension >= 1; returns the wrapper's error code."""
    arrays = (a, b, out)
    if not (all(isinstance(t, types.Array) and t.ndim == 2 for t in arrays)
            and a.dtype in _KINDS and a.dtype == b.dtype == out.dtype
            and a.layout in "CF" and b.layout in "CF" and out.layout == "C"):
        raise TypingError(f"matmul needs 2-d float32/float64 arrays of one dtype, C or F "
                          f"contiguous inputs and a C-contiguous output; got {a}, {b}, {out}")

    def codegen(context, builder, sig, args):
        char, size, ptr = ir.IntType(8), context.get_value_type(types.intp), cgutils.voidptr_t
        fnty = ir.FunctionType(ir.IntType(32), [char, char, char, size, size, size, ptr, ptr,
                                                size, ptr, size, ptr, ptr, size])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        views = [make_array(t)(context, builder, v) for t, v in zip(sig.args[:3], args[:3])]
        (m, k), (_, n), _ = (cgutils.unpack_tuple(builder, v.shape) for v in views)

        def operand(ty, view, shape):
            # Column-major BLAS sees a C-ordered (r, c) array as its (c, r) transpose.
            rows, cols = shape
            return (ir.Constant(char, ord("n" if ty.layout == "C" else "t")),
                    cols if ty.layout == "C" else rows, builder.bitcast(view.data, ptr))

        dtype = sig.args[0].dtype
        alpha = cgutils.alloca_once_value(builder, context.get_constant(dtype, 1.0))
        beta_ = cgutils.alloca_once_value(builder, context.cast(builder, args[3], sig.args[3],
                                                                dtype))
        # out.T = b.T @ a.T in column-major terms: BLAS's first operand is b
        trans_b, ld_b, data_b = operand(sig.args[1], views[1], (k, n))
        trans_a, ld_a, data_a = operand(sig.args[0], views[0], (m, k))
        return builder.call(fn, (ir.Constant(char, ord(_KINDS[dtype])), trans_b, trans_a, n, m, k,
                                 builder.bitcast(alpha, ptr), data_b, ld_b, data_a, ld_a,
                                 builder.bitcast(beta_, ptr), builder.bitcast(views[2].data, ptr),
                                 n))

    return types.int32(a, b, out, beta), codegen


@helper(inline="never")   # a raise inlined into a prange body would stop it running in parallel
def matmul(a, b, out, beta):
    """``out[:] = a @ b + beta * out`` (``beta`` 0: overwrite, 1: accumulate)."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        raise ValueError("matmul: shapes do not match")
    if m == 0 or n == 0:
        return
    if k == 0:
        for i in range(m):
            for j in range(n):
                out[i, j] = out[i, j] * beta if beta != 0 else 0
    elif _xxgemm(a, b, out, beta) != 0:
        raise RuntimeError("matmul: BLAS gemm failed")
