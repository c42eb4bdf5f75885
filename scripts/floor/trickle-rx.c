/* The floor of a trickle: the least a receiver can spend per datagram when each one wakes it.
 *
 * THREADS threads, each with its own SO_REUSEPORT UDP socket on 127.0.0.1:PORT, wait in ppoll without a timeout (on
 * the socket and a stop descriptor, as the engine's readers wait on theirs and their stop signal), take what is
 * queued with one recvmmsg (64 buffers), and wait again: no parse, no hand-over, nothing else. The window opens at
 * the first datagram any thread receives and closes SECONDS later (the main thread then rings every stop
 * descriptor); prints wake-ups, datagrams, CPU time (each thread's CLOCK_THREAD_CPUTIME_ID from its first datagram,
 * summed) and CPU per wake-up. Used by scripts/bench-trickle-floor.sh.
 *
 * With NAP_MS > 0 (optional 4th argument) a thread does not wait on its socket again after a wake-up that found
 * datagrams: it sleeps NAP_MS (clock_nanosleep) and drains again, and goes back to ppoll only once a drain finds
 * nothing. That is the other way to handle a trickle, one wake-up per nap instead of per datagram, with the kernel's
 * receive buffer holding what arrives meanwhile; every nap's wake-up is counted as one. */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { BATCH = 64, SLOT = 2048 };
static int port;
static long nap_ms; /* 0: wait on the socket after every drain */
static int stopping; /* set before the stop descriptors are rung, so a napping thread ends too */
static double seconds;
static double window_start; /* CLOCK_MONOTONIC seconds of the first datagram; 0 before it */
static pthread_barrier_t bound; /* every socket bound before "listening" is printed */

struct result { int stop[2]; long wakes, datagrams; double cpu_us; };

static double now_s(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *rx(void *arg) {
    struct result *r = arg;
    int one = 1, s = socket(AF_INET, SOCK_DGRAM, 0);
    setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001) };
    if (bind(s, (void *)&a, sizeof a)) { perror("bind"); exit(1); }
    pthread_barrier_wait(&bound);
    static __thread char buf[BATCH][SLOT];
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_storage names[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i] = (struct iovec){ buf[i], SLOT };
        memset(&m[i], 0, sizeof m[i]);
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
        m[i].msg_hdr.msg_name = &names[i];
    }
    struct pollfd p[2] = { { s, POLLIN, 0 }, { r->stop[0], POLLIN, 0 } };
    double cpu0 = -1;
    for (;;) {
        if (ppoll(p, 2, NULL, NULL) <= 0) continue;
        if (p[1].revents) break;
        if (cpu0 < 0) {
            cpu0 = now_s(CLOCK_THREAD_CPUTIME_ID);
            double zero = 0, t = now_s(CLOCK_MONOTONIC);
            __atomic_compare_exchange(&window_start, &zero, &t, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        }
        for (int i = 0; i < BATCH; i++) m[i].msg_hdr.msg_namelen = sizeof names[i];
        int n = recvmmsg(s, m, BATCH, MSG_DONTWAIT, NULL);
        r->wakes++;
        if (n > 0) r->datagrams += n;
        while (nap_ms > 0 && n > 0) {
            struct timespec nap = { nap_ms / 1000, (nap_ms % 1000) * 1000000L };
            clock_nanosleep(CLOCK_MONOTONIC, 0, &nap, NULL);
            if (__atomic_load_n(&stopping, __ATOMIC_RELAXED)) break;
            for (int i = 0; i < BATCH; i++) m[i].msg_hdr.msg_namelen = sizeof names[i];
            n = recvmmsg(s, m, BATCH, MSG_DONTWAIT, NULL);
            r->wakes++;
            if (n > 0) r->datagrams += n;
        }
    }
    r->cpu_us = cpu0 < 0 ? 0 : (now_s(CLOCK_THREAD_CPUTIME_ID) - cpu0) * 1e6;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) { fprintf(stderr, "usage: trickle-rx PORT THREADS SECONDS [NAP_MS]\n"); return 2; }
    port = atoi(argv[1]);
    nap_ms = argc == 5 ? atol(argv[4]) : 0;
    int threads = atoi(argv[2]);
    seconds = atof(argv[3]);
    pthread_t t[64];
    struct result r[64] = { 0 };
    if (threads < 1 || threads > 64) { fprintf(stderr, "trickle-rx: 1 to 64 threads\n"); return 2; }
    pthread_barrier_init(&bound, NULL, threads + 1);
    for (int i = 0; i < threads; i++) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, r[i].stop)) { perror("socketpair"); return 1; }
        pthread_create(&t[i], NULL, rx, &r[i]);
    }
    pthread_barrier_wait(&bound);
    fprintf(stderr, "trickle-rx: listening on 127.0.0.1:%d\n", port);
    double start;
    for (;;) {
        __atomic_load(&window_start, &start, __ATOMIC_SEQ_CST);
        if (start != 0) break;
        usleep(10000);
    }
    double left = start + seconds - now_s(CLOCK_MONOTONIC);
    if (left > 0) usleep((useconds_t)(left * 1e6));
    __atomic_store_n(&stopping, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < threads; i++) {
        if (write(r[i].stop[1], "x", 1) != 1) { perror("write"); return 1; }
    }
    long wakes = 0, datagrams = 0;
    double cpu = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        wakes += r[i].wakes;
        datagrams += r[i].datagrams;
        cpu += r[i].cpu_us;
    }
    printf("floor: %d threads, nap %ld ms, %.1f s: %ld wake-ups, %ld datagrams, cpu %.0f us = %.4f %% of one core, %.1f us per wake-up\n",
           threads, nap_ms, seconds, wakes, datagrams, cpu, cpu / (seconds * 1e6) * 100, wakes ? cpu / wakes : 0);
    return 0;
}
