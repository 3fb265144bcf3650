"""kernel-patch/: MADV_CLR_HUGEPAGE for Debian's linux-source-6.12, and the command that builds
the test kernels (`vmaflags kernel build`).  See README.md.

    from vmaflags.kernel import build
    b = build.build("patched-6.12")    # cached after the first build
    b.image, b.release, b.selftests["madv_clr_hugepage"], build.KERNELS["patched-6.12"].era
"""
from . import build
from .build import KERNELS, BuildError, Built, Kernel, Skip, build_dir, cached

__all__ = ["KERNELS", "BuildError", "Built", "Kernel", "Skip", "build", "build_dir", "cached"]
