/* A small program with a few obvious hot spots, for trying prof:
     scripts/demo.sh      (builds this, runs it under `prof run`, then `prof report`)
   The main thread runs three phases (naive recursive Fibonacci, a matrix product and a
   prime sieve) while a second thread hashes strings. Build it with frame pointers:
     gcc -O2 -g -fno-omit-frame-pointer -pthread hotspots.c -o hotspots */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 400

static double a[N][N], b[N][N], c[N][N];

__attribute__((noinline)) long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

__attribute__((noinline)) void mat_mul(void) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < N; k++) s += a[i][k] * b[k][j];
            c[i][j] = s;
        }
}

__attribute__((noinline)) int sieve(int limit) {
    char *composite = calloc(limit + 1, 1);
    int count = 0;
    for (int i = 2; i <= limit; i++) {
        if (composite[i]) continue;
        count++;
        for (long j = (long)i * i; j <= limit; j += i) composite[j] = 1;
    }
    free(composite);
    return count;
}

__attribute__((noinline)) uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static void *hasher(void *arg) {
    (void)arg;
    char buf[256];
    uint64_t h = 0;
    for (int i = 0; i < 8000000; i++) {
        int n = snprintf(buf, sizeof buf, "key-%d-%llu", i, (unsigned long long)h);
        h ^= fnv1a(buf, (size_t)n);
    }
    return (void *)(uintptr_t)h;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, hasher, NULL);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) a[i][j] = i + j, b[i][j] = i - j;
    long f = 0;
    int primes = 0;
    for (int round = 0; round < 4; round++) {
        f += fib(35);
        mat_mul();
        primes += sieve(20000000);
    }
    void *h;
    pthread_join(t, &h);
    printf("fib %ld, c[7][9] %.0f, primes %d, hash %llx\n", f, c[7][9], primes,
           (unsigned long long)(uintptr_t)h);
    return 0;
}
