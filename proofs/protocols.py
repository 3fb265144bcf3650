"""Restore protocols: what CRIU's restore does to a dumped process's THP state, per release,
written in the model's syscall language and cited from CRIU's source the way the model cites
the kernel (file, function, commit, first release; CRIU's git history).

What CRIU saves (all releases since the ones cited):
- per VMA, the smaps VmFlags `hg`/`nh` as MADV_HUGEPAGE/MADV_NOHUGEPAGE bits of `madv`
  (criu/proc_parse.c parse_vmflags, cc6af3898, v0.3);
- PR_GET_THP_DISABLE as read by the parasite (criu/pie/parasite.c dump_misc), stored in the
  protobuf bool `mm_entry.thp_disabled`, so a 6.18 EXCEPT_ADVISED value 3 is saved as true
  (criu/cr-dump.c dump_task_mm, images/mm.proto; bbbd597b4124, v3.5).

What every release does on restore, in this order:
1. `maybe_disable_thp()` (criu/mem.c, called from prepare_mappings before premap_priv_vmas;
   9d45bb398, v3.5): prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0), only for a lazy restore
   (--lazy-pages) whose page images have a parent (a pre-dump): "There is no need to disable
   it if the page read doesn't have parent. In this case VMA will be empty until
   userfaultfd_register".  On kernels where the prctl sets VM_NOHUGEPAGE on new VMAs (our
   def-flags era) CRIU only warns (kerndat_has_thp_disable, 5480a2a40, v3.5).
2. premap_priv_vmas(): an anonymous private mapping per VMA (criu/mem.c, fce8cac1d, v1.6),
   except where the restorer can map and read it itself: a private VMA no child shares whose
   page read is `pieok` -- local images, no parent, not --lazy-pages (criu/pagemap.c
   open_page_read_at; 91388fce0 "mem: Delayed vma/pr restore", v3.2).  So every VMA of a
   lazy or pre-dumped restore is premapped, and no VMA of a plain one is.
3. restore_priv_vma_content(): writes the pages of premapped VMAs: the parent's (pre-dumped)
   pages of a lazy restore (`pagemap_lazy` pages are skipped); a plain restore's pages are
   queued for the restorer instead (pagemap_enqueue_iovec).
4. The restorer (criu/pie/restorer.c __export_restore_task) moves each premapped VMA into place
   (vma_remap) and, for a lazy restore, registers it: enable_uffd(), UFFDIO_REGISTER_MODE_MISSING
   (57891afcb, v3.5 is the first release with lazy pages).
5. The THP_DISABLE prctl after the remap loops, before restore_mapping() maps the VMAs that
   were not premapped and preadv() reads their queued pages ("Now read the contents"): in a
   plain restore the prctl comes before every mmap and page write.
   - v3.5-v3.18 (9d45bb398): only `if (args->uffd > -1)` (a lazy restore) and only if
     maybe_disable_thp() disabled THP and the dump said THP was enabled: prctl(.., 0, ..).
     A plain or parentless lazy restore never calls it, so a dumped prctl(1) is lost; a lazy
     restore with a parent keeps the prctl(1) it set when the dump had one.
   - v3.19+ (21ce76263 "Restore THP_DISABLE prctl.", v3.19): always
     prctl(PR_SET_THP_DISABLE, thp_disabled, 0, 0, 0) with the saved bool.
6. "Finally restore madivse() bits" (183eaab89, v0.3): madvise(start, len, bit) for each set
   bit of `madv` in ascending order (MADV_HUGEPAGE 14 before MADV_NOHUGEPAGE 15).
Any failing syscall above ends the restore (`goto core_restore_end` / return -1): the model
reports such a restore as aborted.

Not modelled: the premap area is elsewhere and VMAs are mremap()ed into place (vma_remap), so
PMD alignment during step 3 differs from the final one; the model maps each VMA at its final
address.  Non-lazy VMAs of a lazy restore (stack, VM_LOCKED, vDSO: vma_entry_can_be_lazy) are
not told apart: every dumped VMA is private anonymous and lazy.  The lazy phase itself (the
lazy-pages daemon's UFFDIO_COPY and close) comes after the modelled restore.

`Restore` turns a protocol into symbolic steps over a symbolic dump, so the theorems quantify
over every dump of the arena; a step that depends on the dump ("if this VMA had hg") is guarded
by that condition.  The dump: cells, each mapped or not; cells of a VMA share its hg/nh; `pop`
marks the pages the restore writes before registration (a plain restore: every present page;
a lazy restore with a parent: the pre-dumped ones; a parentless lazy restore: none); PR_GET
as the parasite read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from vmaflags.model import arena
from vmaflags.model import step as S
from vmaflags.model.backend import Z3
from vmaflags.model import rules
from vmaflags.model.state import State, cells
from vmaflags.model.syscalls import (MADV_CLR_HUGEPAGE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, Madvise,
                                     Mmap, PrctlGet, PrctlSet, Touch, UffdRegister)

from .engine import Run


def pr_get(era: Any, st: State) -> Any:
    """What prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) returns in `st`: the parasite's call
    (dump_misc), and what a restored process's owner would ask."""
    return S.transition(Z3, era, st, PrctlGet(), (0, 0, 0, 0))[0]


class Restore:
    """The restorer process, stepping symbolically over a symbolic dump."""

    def __init__(self, run: Run, dump: State, protocol: Protocol):
        self.run, self.dump, self.protocol = run, dump, protocol
        self.cs = cells(dump)
        self.views = arena.vma_views(Z3, self.cs)
        self.saved_get = pr_get(run.era, dump)

    def written(self, i: int) -> Any:
        """Does the restore write cell i's pages before the lazy phase?"""
        if self.protocol.lazy and not self.protocol.parent:
            return False
        c = self.cs[i]
        return Z3.and_(c.mapped, c.pop)

    def lazy(self, i: int) -> Any:
        """Are cell i's pages left to the lazy phase (UFFDIO_COPY after the restore)?"""
        if not self.protocol.lazy:
            return False
        return Z3.and_(self.cs[i].mapped, Z3.not_(self.written(i)))

    def each_vma(self, action: Callable[[int], None]) -> None:
        """`action(i)` for every cell i (a step on it is guarded by "i starts a dumped VMA")."""
        for i in range(len(self.cs)):
            action(i)

    def _vma(self, i: int) -> tuple[Any, Any, Any]:
        c, v = self.cs[i], self.views[i]
        return Z3.and_(c.mapped, Z3.not_(v.same)), v.vstart, v.vend

    def mmap(self, i: int) -> None:
        starts, a, b = self._vma(i)
        self.run.do(Mmap(0, 0), (a, b), starts)

    def madvise(self, i: int, advice: int, when: Any = True) -> None:
        starts, a, b = self._vma(i)
        self.run.do(Madvise(0, 0, advice), (a, b), Z3.and_(starts, when))

    def register(self, i: int) -> None:
        """enable_uffd(): UFFDIO_REGISTER_MODE_MISSING over the VMA (lazy restores only)."""
        starts, a, b = self._vma(i)
        self.run.do(UffdRegister(0, 0, True, False), (a, b), starts)

    def populate(self) -> None:
        """restore_priv_vma_content(): write the pages the restore has (write faults)."""
        for i, c in enumerate(self.cs):
            w = self.written(i)
            if w is not False:
                self.run.do(Touch(0, 0), (c.start, c.end), w)

    def restore_madv(self, i: int) -> None:
        """CRIU: each saved madv bit set again with madvise(), ascending; nothing is cleared."""
        c = self.cs[i]
        self.madvise(i, MADV_HUGEPAGE, c.hg)
        self.madvise(i, MADV_NOHUGEPAGE, c.nh)

    def prctl(self, a2: Any, a3: Any = 0, when: Any = None) -> None:
        self.run.do(PrctlSet(), (a2, a3, 0, 0), when)

    def saved_bool(self) -> Any:
        """mm_entry.thp_disabled: the saved PR_GET value as a protobuf bool."""
        return Z3.ite(self.saved_get == 0, 0, 1)

    def saved_mode(self) -> tuple[Any, Any]:
        """The saved PR_GET value as prctl arguments: 3 (6.18) is EXCEPT_ADVISED."""
        return (self.saved_bool(),
                Z3.ite(self.saved_get == 1 | rules.PR_THP_DISABLE_EXCEPT_ADVISED,
                       rules.PR_THP_DISABLE_EXCEPT_ADVISED, 0))


@dataclass(frozen=True)
class Protocol:
    id: str
    summary: str
    lazy: bool  # --lazy-pages: VMAs are registered with userfaultfd, pages come later
    parent: bool  # the page images have a parent (pre-dump) whose pages are written first
    steps: Callable[[Restore], None]


def _criu_3_5(r: Restore) -> None:
    """CRIU v3.5-v3.18 (9d45bb398)."""
    p = r.protocol
    if p.lazy and p.parent:
        r.prctl(1)  # maybe_disable_thp()
    r.each_vma(r.mmap)  # premap_priv_vmas(); a plain restore: restore_mapping()
    r.populate()  # restore_priv_vma_content()
    if p.lazy:
        r.each_vma(r.register)  # vma_remap() -> enable_uffd()
        if p.parent:  # has_thp_enabled: set by maybe_disable_thp() when the dump had 0
            r.prctl(0, when=r.saved_get == 0)
    r.each_vma(r.restore_madv)


def _criu_3_19(r: Restore) -> None:
    """CRIU v3.19+ (21ce76263): the saved bool goes back on every restore."""
    p = r.protocol
    if p.lazy:
        if p.parent:
            r.prctl(1)
        r.each_vma(r.mmap)
        r.populate()
        r.each_vma(r.register)
        r.prctl(r.saved_bool())
    else:  # pieok: restore_mapping() and preadv() in the restorer, after its prctl
        r.prctl(r.saved_bool())
        r.each_vma(r.mmap)
        r.populate()
    r.each_vma(r.restore_madv)


def _criu_fixed(r: Restore) -> None:
    """Our proposal: v3.19 with a pre-dump, restoring the saved value exactly (3 with
    PR_THP_DISABLE_EXCEPT_ADVISED)."""
    r.prctl(1)
    r.each_vma(r.mmap)
    r.populate()
    r.each_vma(r.register)
    r.prctl(*r.saved_mode())
    r.each_vma(r.restore_madv)


def _clr_2017(r: Restore) -> None:
    """The seed thread's proposal: MADV_NOHUGEPAGE right after each mmap instead of the prctl;
    afterwards MADV_HUGEPAGE, MADV_NOHUGEPAGE or MADV_CLR_HUGEPAGE per dumped VMA."""
    for i in range(len(r.cs)):
        r.mmap(i)
        r.madvise(i, MADV_NOHUGEPAGE)
    r.populate()
    r.each_vma(r.register)
    for i, c in enumerate(r.cs):
        r.madvise(i, MADV_HUGEPAGE, c.hg)
        r.madvise(i, MADV_NOHUGEPAGE, c.nh)
        r.madvise(i, MADV_CLR_HUGEPAGE, Z3.and_(Z3.not_(c.hg), Z3.not_(c.nh)))
    r.prctl(*r.saved_mode())


def _naive(r: Restore) -> None:
    """No protection: pages go in before registration; flags and the exact mode come back."""
    r.each_vma(r.mmap)
    r.populate()
    r.each_vma(r.register)
    r.each_vma(r.restore_madv)
    r.prctl(*r.saved_mode())


PROTOCOLS: dict[str, Protocol] = {p.id: p for p in (
    Protocol("naive", "no protection, lazy with a pre-dump", True, True, _naive),
    Protocol("3.5-lazy-predump", "CRIU 3.5-3.18 --lazy-pages with a pre-dump", True, True,
             _criu_3_5),
    Protocol("3.5-lazy", "CRIU 3.5-3.18 --lazy-pages, no pre-dump", True, False, _criu_3_5),
    Protocol("3.5-plain", "CRIU 3.5-3.18, all pages in the images", False, False, _criu_3_5),
    Protocol("3.19-lazy-predump", "CRIU 3.19+ --lazy-pages with a pre-dump", True, True,
             _criu_3_19),
    Protocol("3.19-lazy", "CRIU 3.19+ --lazy-pages, no pre-dump", True, False, _criu_3_19),
    Protocol("3.19-plain", "CRIU 3.19+, all pages in the images", False, False, _criu_3_19),
    Protocol("criu-fixed", "ours: 3.19 lazy with a pre-dump, the exact mode restored", True,
             True, _criu_fixed),
    Protocol("clr-2017", "the 2017 proposal: MADV_NOHUGEPAGE, then MADV_CLR_HUGEPAGE", True,
             True, _clr_2017),
)}
