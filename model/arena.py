"""What the rules need to know about the arena's structure, for both backends.

VMA extents (cells joined by `brk`), per-PMD facts (is the block inside one VMA, populated?),
and the re-merge after a range operation.  These are the two non-pointwise parts of the model
(design-notes.md): PMD fit and VMA merging.  Everything here loops over the (concrete) list of
cells and builds backend values, so it serves the interpreter and the Z3 encoding alike.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from . import rules
from .state import Cell, Mm, State
from .syscalls import PMD_PAGES


class View(NamedTuple):
    """One cell seen as part of its VMA."""

    same: Any  # continues the VMA of the previous cell
    vstart: Any  # the VMA's first page
    vend: Any  # one past the VMA's last page
    fits: Any  # an aligned PMD lies inside the VMA


def vma_views(B: Any, cs: list[Cell]) -> list[View]:
    n = len(cs)
    same = [B.F] * n
    vstart: list[Any] = [0] * n
    for i, c in enumerate(cs):
        same[i] = B.and_(c.mapped, cs[i - 1].mapped, B.not_(c.brk)) if i else B.F
        vstart[i] = B.ite(same[i], vstart[i - 1], c.start) if i else c.start
    vend: list[Any] = [0] * n
    for i in reversed(range(n)):
        vend[i] = B.ite(same[i + 1], vend[i + 1], cs[i].end) if i + 1 < n else cs[i].end
    return [View(same[i], vstart[i], vend[i], pmd_fits(B, vstart[i], vend[i])) for i in range(n)]


def pmd_fits(B: Any, vstart: Any, vend: Any) -> Any:
    """An aligned PMD lies inside [vstart, vend): the first aligned page at or after vstart
    plus a PMD reaches no further than vend (thp_vma_suitable_order at vm_end - PMD_SIZE)."""
    return B.div(vstart + PMD_PAGES - 1, PMD_PAGES) * PMD_PAGES + PMD_PAGES <= vend


def block_first(st: State) -> list[int]:
    """Index (in the flat cell list) of each block's first cell."""
    out, i = [], 0
    for b in st.blocks:
        out.append(i)
        i += len(b.cells)
    return out


def in_one_vma(B: Any, block_cells: tuple[Cell, ...]) -> Any:
    """The whole aligned PMD lies inside one VMA."""
    return B.and_(*(c.mapped for c in block_cells), *(B.not_(c.brk) for c in block_cells[1:]))


def khugepaged_eligible(B: Any, era: Any, c: Cell, v: View, mm: Mm, sysfs: Any) -> Any:
    return rules.thp_vma_allowable(B, era, rules.KHUGEPAGED, c.flags, mm, sysfs,
                                   B.not_(c.av == 0), v.fits)


def remerge(B: Any, era: Any, cs: list[Cell], mod: list[Any], op: str = "modify"
            ) -> list[Cell]:
    """Re-evaluate VMA boundaries after a range operation changed the cells marked `mod`:
    `op` is "modify" (madvise), "uffd" (UFFDIO_(UN)REGISTER, closing the userfaultfd) or "new"
    (mmap: the changed cells are the new VMA).

    A boundary with a changed VMA on either side goes iff the two sides are mergeable
    (vma_merge_existing_range / vma_merge_new_range, mm/vma.c 6.12, which try prev, then next);
    other boundaries stay.  The VMA that moves is the changed one, with its own anon_vma (the
    right one if both changed: the walk goes left to right, so the left one was done first).
    Scanning left to right with the anon_vma of the VMA built so far reproduces the kernel's
    choice when prev and next are not compatible with each other: the changed VMA joins prev.
    The merged VMA takes the one anon_vma it contains, if any.  Two era features change this:
    before 6.12 (`mmap_merge_prev_first`) a new VMA that merges into next meets prev with next's
    anon_vma; before 6.4 (`uffd_merge_pgoff`) a uffd piece that starts inside its VMA does not
    merge into next.
    """
    n = len(cs)
    # the anon_vma a new VMA takes from next, if it merges into next (6.1 mmap_region "Check
    # next"), for each of its cells; 0 otherwise
    from_next: list[Any] = [0] * n
    if op == "new" and not era.mmap_merge_prev_first:
        for i in reversed(range(n - 1)):
            c, d = cs[i], cs[i + 1]
            into_next = B.and_(mod[i], B.not_(mod[i + 1]), d.mapped,
                               rules.is_mergeable_vma(B, era, c.flags, d.flags, c.av, d.av))
            from_next[i] = B.ite(mod[i + 1], from_next[i + 1], B.ite(into_next, d.av, 0))
    # 6.1 UFFDIO_(UN)REGISTER: the changed piece this cell belongs to starts inside its VMA
    inside: list[Any] = [B.F] * n
    if op == "uffd" and not era.uffd_merge_pgoff:
        for i in range(1, n):
            was = B.and_(cs[i].mapped, cs[i - 1].mapped, B.not_(cs[i].brk))
            inside[i] = B.and_(was, B.ite(mod[i - 1], inside[i - 1], B.T))
    out: list[Cell] = []
    run = [0] * n
    for i, c in enumerate(cs):
        if i == 0:
            same = B.F
        else:
            p = out[i - 1]
            touched = B.or_(mod[i - 1], mod[i])
            kept = B.not_(c.brk)
            if not B.is_false(touched):
                # the right VMA changed: it merges into prev (the run so far); else the left
                # one changed and merges into next, and if it already took prev, prev and next
                # must be compatible too (vma_merge_existing_range's merge_both)
                moving = B.ite(mod[i - 1], c.av, B.ite(from_next[i] == 0, c.av, from_next[i]))
                joins = B.ite(mod[i],
                              rules.is_mergeable_vma(B, era, p.flags, c.flags, moving, run[i - 1]),
                              B.and_(rules.is_mergeable_vma(B, era, p.flags, c.flags, p.av, c.av),
                                     rules.are_anon_vmas_compatible(B, run[i - 1], c.av),
                                     B.not_(inside[i - 1])))
                kept = B.ite(touched, joins, kept)
            same = B.and_(c.mapped, p.mapped, kept)
        run[i] = B.ite(same, B.ite(run[i - 1] == 0, c.av, run[i - 1]), c.av) if i else c.av
        out.append(B.put(c, brk=B.and_(c.mapped, B.not_(same))))
    final: list[Any] = [0] * n
    final[n - 1] = run[n - 1]
    for i in reversed(range(n - 1)):
        cont = B.and_(out[i + 1].mapped, B.not_(out[i + 1].brk))
        final[i] = B.ite(cont, final[i + 1], run[i])
    return [B.put(c, av=final[i]) for i, c in enumerate(out)]


def merges(B: Any, old: list[Cell], new: list[Cell], mod: list[Any], new_range: bool = False
           ) -> list[Any]:
    """Per cell: a merge joined it to the cell before it -- one VMA now, though before the
    operation they were not one piece of one VMA (the changed cells of a VMA form one piece;
    with `new_range`, mmap's, all changed cells form the new VMA).  remerge() only drops
    boundaries next to a changed cell, so a merge always involves one.  Each is a successful
    vma_merge() / vma_merge_*_range(), which calls khugepaged_enter_vma() on the merged VMA;
    later merges in the same walk only grow that VMA, so the final one decides."""
    out = [B.F]
    for k in range(1, len(new)):
        touched = B.or_(mod[k - 1], mod[k])
        if B.is_false(touched):
            out.append(B.F)
            continue
        now = B.and_(new[k].mapped, new[k - 1].mapped, B.not_(new[k].brk))
        was = B.and_(old[k].mapped, old[k - 1].mapped, B.not_(old[k].brk))
        piece = B.and_(mod[k - 1], mod[k], B.T if new_range else was)
        out.append(B.and_(touched, now, B.not_(piece)))
    return out


def regroup(B: Any, st: State, cs: list[Cell], thp: list[Any], ptable: list[Any]) -> State:
    """Put a flat cell list back into st's block shape (a PMD with neither a THP nor a PTE
    table left has nothing write-protected)."""
    blocks, i = [], 0
    for k, b in enumerate(st.blocks):
        m = len(b.cells)
        blocks.append(B.put(b, thp=thp[k], ptable=ptable[k], cow=B.and_(b.cow, B.or_(ptable[k], thp[k])),
                            cells=tuple(cs[i:i + m])))
        i += m
    return B.put(st, blocks=tuple(blocks))


def split_thps(B: Any, st: State) -> State:
    """A VMA boundary inside a PMD-mapped THP splits the PMD into a PTE table
    (__split_vma -> vma_adjust_trans_huge -> split_huge_pmd); AnonHugePages no longer counts it."""
    blocks = []
    for b in st.blocks:
        if B.is_false(b.thp):
            blocks.append(b)
            continue
        one = in_one_vma(B, b.cells)
        blocks.append(B.put(b, thp=B.and_(b.thp, one),
                            ptable=B.or_(b.ptable, B.and_(b.thp, B.not_(one)))))
    return B.put(st, blocks=tuple(blocks))
