"""repro: the shared library of the Reproducible Papers book.

Infrastructure (assets, run, results, params, plotting, kernels) plus one module per paper.
Importing the package is cheap: heavy dependencies are imported by the modules that need them.
"""

__version__ = "0.1.0"
