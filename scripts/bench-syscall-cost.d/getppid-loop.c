/* scripts/bench-syscall-cost.d/getppid-loop.c — the cost of one syscall, bare or as a launcher worker.
 *
 *   getppid-loop [PORT]
 *
 * Times ROUNDS rounds of CALLS getppid(2) calls (a syscall that does nothing else) and prints the best
 * round's ns per call on stderr: `getppid: 73.7 ns per call`. With PORT it then binds and listens on
 * 127.0.0.1:PORT and waits for a signal, so that reuseport-launch counts it ready and keeps it; the
 * loop ran under the launcher's seccomp filter (installed before exec). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CALLS 5000000L
#define ROUNDS 5

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double best = 1e9;
    for (int round = 0; round < ROUNDS; round++) {
        double start = now_s();
        for (long i = 0; i < CALLS; i++) syscall(SYS_getppid);
        double ns = (now_s() - start) / CALLS * 1e9;
        if (ns < best) best = ns;
    }
    fprintf(stderr, "getppid: %.1f ns per call\n", best);
    if (argc < 2) return 0;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || bind(s, (struct sockaddr *)&address, sizeof address) || listen(s, 16)) {
        perror("getppid-loop: listen");
        return 1;
    }
    pause();
    return 0;
}
