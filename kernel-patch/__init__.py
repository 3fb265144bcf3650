"""kernel-patch/: MADV_CLR_HUGEPAGE for Debian's linux-source-6.12, and the command that builds
the test kernels (`vmaflags kernel build`).  See README.md.

    from vmaflags.kernel import KERNELS, build, Built, BuildError, Skip
    built = build("patched-6.12")      # cached after the first build
    built.image, built.release, built.selftests["madv_clr_hugepage"]
"""
from .kbuild import BuildError, Built, build, build_dir, cached
from .source import Skip, cache_root
from .spec import KERNELS, Kernel, cache_key, kernel

__all__ = ["KERNELS", "BuildError", "Built", "Kernel", "Skip", "build", "build_dir", "cache_key",
           "cache_root", "cached", "kernel"]
