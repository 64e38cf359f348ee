"""KernelNotes: notes whose code is indexed, executed, checked against reference kernels and published."""

__version__ = "0.1.0"
