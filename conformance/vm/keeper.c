/*
 * keeper: keep one mm registered with khugepaged for the life of the guest, then sleep.
 *
 * khugepaged sleeps without a timeout while no mm is registered, and __khugepaged_enter() wakes
 * it the moment the first one is: in a guest where the executor is the only user process, every
 * script that registers its mm would get an immediate, unasked-for scan (and collapses the model
 * cannot predict), and `khugepaged` steps would wait for scans that never come.  On a host other
 * processes keep the list non-empty; this process does the same in the guest.
 */
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif

int main(void)
{
	size_t pmd = 2u << 20;
	char *p = mmap(NULL, 3 * pmd, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	char *a = (char *)(((uintptr_t)p + pmd - 1) & ~(uintptr_t)(pmd - 1));
	a[0] = 1;                          /* an anon_vma, so that the VMA passes the checks */
	madvise(a, pmd, MADV_HUGEPAGE);    /* registers the mm (khugepaged_enter_vma) */
	a[pmd / 2] = 1;
	for (;;)
		pause();
}
