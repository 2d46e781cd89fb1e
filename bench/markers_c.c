/* The C side of bench/RESULTS-markers.md: the cost of a system call or two here, and of a
 * prof_marker_begin/prof_marker_end pair (resolved at run time: run it under `prof run`).
 *   gcc -O2 bench/markers_c.c -o /tmp/markers_c && target/release/prof run -q -- /tmp/markers_c */
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
void prof_marker_begin(const char *name) __attribute__((weak));
void prof_marker_end(void) __attribute__((weak));
static double now(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(void) {
    int n = 1000000;
    double t0 = now(CLOCK_MONOTONIC);
    for (int i = 0; i < n; i++) syscall(SYS_gettid);
    double t1 = now(CLOCK_MONOTONIC);
    for (int i = 0; i < n; i++) now(CLOCK_THREAD_CPUTIME_ID);
    double t2 = now(CLOCK_MONOTONIC);
    for (int i = 0; i < n; i++) now(CLOCK_MONOTONIC);
    double t3 = now(CLOCK_MONOTONIC);
    if (prof_marker_begin) for (int i = 0; i < n; i++) { prof_marker_begin("req"); prof_marker_end(); }
    double t4 = now(CLOCK_MONOTONIC);
    fprintf(stderr, "gettid %.0f ns, thread cpu clock %.0f ns, monotonic %.0f ns, marker pair %.0f ns\n",
        (t1-t0)/n*1e9, (t2-t1)/n*1e9, (t3-t2)/n*1e9, (t4-t3)/n*1e9);
}
