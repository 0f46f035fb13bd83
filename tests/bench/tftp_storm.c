/* A classroom's PXE ROMs fetching their first-stage loader at once: N lock-step TFTP reads
 * (RFC 1350 + blksize/tsize, one block in flight, as a PXE ROM does), each from its own source
 * address 127.1.a.b, all RRQs sent together, one process and epoll so the client costs less
 * than the servers. A silent transfer re-sends its last packet after `timeout_ms`, 5 times at
 * most (a ROM's retries), then counts as failed. Each transfer's bytes are hashed (FNV-1a 64).
 *
 *   tftp_storm SERVER PORT FILE SIZE FNV64_HEX N BLKSIZE TIMEOUT_MS
 *
 * Prints one line per client "client I ok|fail SECONDS BYTES WHY" and a summary line
 * "summary ok K failed F last SECONDS retransmits R". Bounded: 300 s in all. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { IDLE, RUNNING, OK, FAILED };

struct client {
    int fd, state, tries;
    uint16_t expect;          /* next DATA block wanted */
    struct sockaddr_in peer;  /* the server's transfer port, once known */
    int have_peer;
    uint64_t bytes, hash;
    double began, last, done;
    unsigned char last_pkt[600];
    size_t last_len;
    const char *why;
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void fnv(uint64_t *h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) { *h ^= p[i]; *h *= 1099511628211ULL; }
}

static void send_last(struct client *c, const struct sockaddr_in *server) {
    const struct sockaddr_in *to = c->have_peer ? &c->peer : server;
    sendto(c->fd, c->last_pkt, c->last_len, 0, (const struct sockaddr *)to, sizeof *to);
}

static void ack(struct client *c, uint16_t block) {
    c->last_pkt[0] = 0; c->last_pkt[1] = 4;
    c->last_pkt[2] = block >> 8; c->last_pkt[3] = block & 0xff;
    c->last_len = 4;
    sendto(c->fd, c->last_pkt, 4, 0, (const struct sockaddr *)&c->peer, sizeof c->peer);
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s SERVER PORT FILE SIZE FNV64_HEX N BLKSIZE TIMEOUT_MS\n", argv[0]);
        return 2;
    }
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &server.sin_addr);
    const char *file = argv[3];
    uint64_t size = strtoull(argv[4], 0, 10), want_hash = strtoull(argv[5], 0, 16);
    int n = atoi(argv[6]), blksize = atoi(argv[7]);
    double timeout = atoi(argv[8]) / 1000.0;
    struct client *cs = calloc(n, sizeof *cs);
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        struct client *c = &cs[i];
        c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int buf = 1 << 16;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        struct sockaddr_in me = {.sin_family = AF_INET};
        me.sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | ((1 + i / 200) << 8) | (1 + i % 200));
        if (bind(c->fd, (struct sockaddr *)&me, sizeof me) < 0) { perror("bind"); return 1; }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        int len = snprintf((char *)c->last_pkt + 2, sizeof c->last_pkt - 2, "%s%coctet%cblksize%c%d%ctsize%c0%c",
                           file, 0, 0, 0, blksize, 0, 0, 0);
        c->last_pkt[0] = 0; c->last_pkt[1] = 1;
        c->last_len = len + 2;
        c->hash = 1469598103934665603ULL;
        c->expect = 1;
    }
    double start = now();
    for (int i = 0; i < n; i++) {      /* the classroom's ROMs, all at once */
        cs[i].state = RUNNING;
        cs[i].began = cs[i].last = now();
        send_last(&cs[i], &server);
    }
    unsigned char pkt[65536 + 4];
    long retransmits = 0;
    int left = n;
    double check = now();
    while (left > 0 && now() - start < 300) {
        struct epoll_event evs[64];
        int k = epoll_wait(ep, evs, 64, 50);
        for (int e = 0; e < k; e++) {
            struct client *c = &cs[evs[e].data.u32];
            for (;;) {
                struct sockaddr_in from;
                socklen_t fl = sizeof from;
                ssize_t got = recvfrom(c->fd, pkt, sizeof pkt, 0, (struct sockaddr *)&from, &fl);
                if (got < 0) break;
                if (c->state != RUNNING || got < 4) continue;
                if (!c->have_peer) { c->peer = from; c->have_peer = 1; }
                else if (from.sin_port != c->peer.sin_port) continue;   /* another TID */
                int op = pkt[1];
                c->last = now();
                c->tries = 0;
                if (op == 6) {                 /* OACK: acknowledge as block 0 */
                    ack(c, 0);
                } else if (op == 3) {
                    uint16_t block = (pkt[2] << 8) | pkt[3];
                    if (block == c->expect) {
                        size_t len = got - 4;
                        fnv(&c->hash, pkt + 4, len);
                        c->bytes += len;
                        ack(c, block);
                        c->expect++;
                        if ((int)len < blksize) {
                            int good = c->bytes == size && c->hash == want_hash;
                            c->state = good ? OK : FAILED;
                            c->why = good ? "" : "wrong bytes";
                            c->done = now();
                            left--;
                        }
                    } else if ((uint16_t)(block + 1) == c->expect) {
                        ack(c, block);     /* our ACK was lost: the server sent it again */
                    }
                } else if (op == 5) {
                    c->state = FAILED;
                    c->why = "TFTP error";
                    c->done = now();
                    left--;
                }
            }
        }
        double t = now();
        if (t - check >= 0.05) {
            check = t;
            for (int i = 0; i < n; i++) {
                struct client *c = &cs[i];
                if (c->state != RUNNING || t - c->last < timeout) continue;
                if (++c->tries > 5) {
                    c->state = FAILED; c->why = "no answer after 5 retries"; c->done = t; left--;
                    continue;
                }
                c->last = t;
                retransmits++;
                send_last(c, &server);
            }
        }
    }
    int ok = 0, failed = 0;
    double last = 0;
    for (int i = 0; i < n; i++) {
        struct client *c = &cs[i];
        if (c->state == RUNNING) { c->state = FAILED; c->why = "unfinished at the deadline"; c->done = now(); }
        ok += c->state == OK;
        failed += c->state == FAILED;
        if (c->done - start > last) last = c->done - start;
        printf("client %d %s %.4f %llu %s\n", i, c->state == OK ? "ok" : "fail", c->done - start,
               (unsigned long long)c->bytes, c->why ? c->why : "");
    }
    printf("summary ok %d failed %d last %.3f retransmits %ld\n", ok, failed, last, retransmits);
    return failed ? 1 : 0;
}
