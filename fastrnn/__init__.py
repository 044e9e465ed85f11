"""fastrnn: recurrent networks trained from NumPy code at compiled speed.

``fastrnn.reference`` (NumPy) defines the maths; ``fastrnn.kernels`` (Numba) computes the same
functions fast and is imported only when the Numba backend is used, so ``import fastrnn`` compiles
nothing.
"""

__version__ = "0.1.0"
