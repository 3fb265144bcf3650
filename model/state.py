"""The state the rules act on.  Fields hold backend values: Python bools/ints or Z3 terms.

The arena is cut into aligned PMD *blocks*, and each block into *cells*: runs of pages with the
same state.  A cell never straddles a VMA boundary; `brk` says a VMA starts at the cell's first
page.  Concretely the cells are the VMA
pieces (split at syscall ranges, coalesced afterwards); symbolically they are a fixed number of
runs with symbolic bounds.  Page numbers are relative to the arena base (2 MiB aligned).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .syscalls import PMD_PAGES


class Flags(NamedTuple):
    """The vm_flags bits the model tracks (smaps VmFlags mnemonics)."""

    hg: Any  # VM_HUGEPAGE
    nh: Any  # VM_NOHUGEPAGE
    um: Any  # VM_UFFD_MISSING
    uw: Any  # VM_UFFD_WP


class Cell(NamedTuple):
    start: Any  # first page
    end: Any  # one past the last page
    mapped: Any
    brk: Any  # a VMA starts at `start` (always true for a mapped cell after a hole)
    hg: Any
    nh: Any
    um: Any
    uw: Any
    av: Any  # anon_vma identity, 0 = none yet (anon_vma_prepare on first write)
    pop: Any  # every page of the cell has a present PTE / is part of a THP

    @property
    def flags(self) -> Flags:
        return Flags(self.hg, self.nh, self.um, self.uw)


class Block(NamedTuple):
    """One aligned PMD of the arena: its page-middle-directory entry and its cells, in order.
    Cells never straddle a block, so every per-PMD question looks at one block's cells."""

    thp: Any  # PMD-maps an anonymous THP (AnonHugePages)
    ptable: Any  # has a PTE page table (so pmd_none() is false)
    cow: Any  # fork write-protected the PMD THP or every present PTE, none written since
    cells: tuple[Cell, ...]


class Mm(NamedTuple):
    def_nh: Any  # mm->def_flags & VM_NOHUGEPAGE (def-flags eras)
    disable: Any  # MMF_DISABLE_THP (4.13+), MMF_DISABLE_THP_COMPLETELY (6.18+)
    except_adv: Any  # MMF_DISABLE_THP_EXCEPT_ADVISED (6.18+)
    registered: Any  # MMF_VM_HUGEPAGE: on khugepaged's mm list


class State(NamedTuple):
    blocks: tuple[Block, ...]
    mm: Mm
    sysfs: Any  # 0 always, 1 madvise, 2 never (syscalls.SYSFS_MODES)
    next_av: Any  # next fresh anon_vma identity


def empty_state(blocks: int = 4, sysfs: int = 1) -> State:
    """A fresh process: nothing mapped in the arena, no prctl, default sysfs `madvise`."""
    return State(tuple(Block(False, False, False, (hole(k * PMD_PAGES, (k + 1) * PMD_PAGES),))
                       for k in range(blocks)), Mm(False, False, False, False), sysfs, 1)


def hole(start: int, end: int) -> Cell:
    return Cell(start, end, False, False, False, False, False, False, 0, False)


def cells(st: State) -> list[Cell]:
    """All cells of the arena in address order."""
    return [c for b in st.blocks for c in b.cells]
