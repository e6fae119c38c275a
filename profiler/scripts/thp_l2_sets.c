// Does a transparent huge page make the L2 cache sets follow the virtual address on this
// machine? (docs/profiler.md, "Session 8".)
//
//     gcc -O2 -o /tmp/thp_l2_sets profiler/scripts/thp_l2_sets.c
//     taskset -c 1 /tmp/thp_l2_sets 1   # region in THP (MADV_HUGEPAGE)
//     taskset -c 1 /tmp/thp_l2_sets 0   # region in 4 KiB pages (MADV_NOHUGEPAGE)
//
// A pointer chase over N cache lines spaced by 128 KiB inside a 2 MiB-aligned 32 MiB region.
// The L2 here is 2 MiB, 16-way: 2048 sets, set index = physical address bits 6-16. Lines
// 128 KiB apart agree in bits 0-16 of their *virtual* address, so if the physical address
// follows the virtual one through bit 16 (what a 2 MiB page that is contiguous in the machine's
// real memory gives) all N lines share one L2 set, and from N = 17 on the chase misses to L3
// (several times slower per load). With 4 KiB physical pages bits 12-16 are each frame's own,
// the lines spread over 32 page colours and stay in L2. In a VM the guest's huge page is
// contiguous in guest-physical memory (the pagemap check below, root only), but the host decides
// the real frames. The second stride (128 KiB + 33 lines) is the control without conflicts.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// Guest-physical frame number of the page holding `p` (0 when unreadable: not root).
static uint64_t pfn(void *p) {
  int fd = open("/proc/self/pagemap", O_RDONLY);
  if (fd < 0) return 0;
  uint64_t e = 0;
  if (pread(fd, &e, 8, ((uintptr_t)p / 4096) * 8) != 8) e = 0;
  close(fd);
  return (e >> 63) & 1 ? e & ((1ULL << 55) - 1) : 0;
}

// ns per load of a pointer chase through `lines` in a fixed random cycle (so that the hardware
// prefetchers cannot follow it), best of 5.
static double chase(char **lines, int n) {
  int *perm = malloc(n * sizeof(int));
  for (int i = 0; i < n; i++) perm[i] = i;
  srand(1);
  for (int i = n - 1; i > 0; i--) {
    int j = rand() % (i + 1), t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (int i = 0; i < n; i++) *(void **)lines[perm[i]] = lines[perm[(i + 1) % n]];
  void **p = (void **)lines[perm[0]];
  long iters = 4000000;
  double best = 1e9;
  for (int rep = 0; rep < 5; rep++) {
    double t = now();
    for (long k = 0; k < iters; k++) p = (void **)*p;
    t = now() - t;
    if (t < best) best = t;
  }
  free(perm);
  if (!p) printf("!");  // keeps the chase
  return best / iters * 1e9;
}

int main(int argc, char **argv) {
  int huge = argc > 1 && atoi(argv[1]);
  size_t size = 32 << 20, align = 2 << 20;
  char *raw = mmap(0, size + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return 1;
  char *base = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
  madvise(base, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  memset(base, 1, size);
  int contiguous = 0;
  uint64_t f0 = pfn(base);
  for (int i = 1; i < 512; i++) contiguous += f0 && pfn(base + i * 4096) == f0 + i;
  char line[256];
  long ahp = -1;
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "AnonHugePages:", 14)) ahp = atol(line + 14);
  if (f) fclose(f);
  printf("thp=%d AnonHugePages=%ld kB, guest frames contiguous in the first 2 MiB: %d of 511\n",
         huge, ahp, contiguous);
  size_t strides[] = {128 << 10, (128 << 10) + 33 * 64};
  int ns[] = {8, 12, 14, 16, 18, 20, 24, 32, 48, 64, 96, 128, 192};
  char *lines[192];
  for (int si = 0; si < 2; si++) {
    size_t s = strides[si];
    printf("stride %zu B, lines:ns per load", s);
    for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
      int n = ns[ni];
      if ((size_t)n * s >= size) break;
      for (int i = 0; i < n; i++) lines[i] = base + i * s;
      printf(" %d:%.2f", n, chase(lines, n));
    }
    printf("\n");
  }
  // The 16 lines 128 KiB apart of the first 2 MiB page against those of the second page moved
  // by d pages: if each 2 MiB page were contiguous in real memory (at whatever 4 KiB colour the
  // host put it), one d would put all 32 lines in one L2 set and the chase would slow down to
  // L3 latency there.
  double worst = 0;
  int worst_d = 0;
  printf("two pages, second moved by d x 4 KiB, d:ns per load");
  for (int d = 0; d < 32; d++) {
    for (int k = 0; k < 16; k++) {
      lines[k] = base + k * (128 << 10);
      lines[16 + k] = base + (2 << 20) + k * (128 << 10) + d * 4096;
    }
    double t = chase(lines, 32);
    printf(" %d:%.1f", d, t);
    if (t > worst) worst = t, worst_d = d;
  }
  printf("\nslowest d = %d: %.2f ns per load\n", worst_d, worst);
  return 0;
}
