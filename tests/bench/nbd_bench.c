/* Boot-storm load generator for the NBD benchmark (tests/bench/nbd_bench.py).
 *
 * N client threads each negotiate NBD_OPT_GO on their own connection, wait on a barrier,
 * then read BYTES of random, 4 KiB-aligned MIN..MAX byte ranges, one request in flight
 * (a booting client waiting on its root filesystem). The first 64 bytes of every reply
 * are checked against the image file, so a server cannot win by sending wrong data.
 * Prints one JSON line: bytes, seconds, MB/s, p50/p99/max latency in ms, errors.
 *
 * usage: nbd_bench PORT EXPORT IMAGE CLIENTS BYTES MIN MAX SEED
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <endian.h>

static int port, nclients, image_fd;
static const char *export_name;
static uint64_t per_client, minlen, maxlen, image_size, seed;
static pthread_barrier_t barrier;

struct result { int id; double *lat; size_t n; uint64_t bytes; int errors; double end; };

static double now(void) {
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int readall(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n) {
    ssize_t r = recv(fd, p, n, MSG_WAITALL);
    if (r <= 0) { if (r < 0 && errno == EINTR) continue; return -1; }
    p += r; n -= r;
  }
  return 0;
}

static int writeall(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r <= 0) { if (r < 0 && errno == EINTR) continue; return -1; }
    p += r; n -= r;
  }
  return 0;
}

static int negotiate_once(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct timeval tv = { .tv_sec = 10 };   /* every wait is bounded */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
  int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  unsigned char g[18];
  if (readall(fd, g, 18) || memcmp(g, "NBDMAGICIHAVEOPT", 16)) { close(fd); return -1; }
  uint32_t cflags = htonl(3);                       /* FIXED_NEWSTYLE | NO_ZEROES */
  if (writeall(fd, &cflags, 4)) { close(fd); return -1; }
  uint32_t nlen = strlen(export_name);
  unsigned char opt[16 + 4 + 4096 + 2];
  uint64_t magic = htobe64(0x49484156454F5054ULL);
  uint32_t code = htonl(7), dlen = htonl(4 + nlen + 2), nl = htonl(nlen);
  memcpy(opt, &magic, 8); memcpy(opt + 8, &code, 4); memcpy(opt + 12, &dlen, 4);
  memcpy(opt + 16, &nl, 4); memcpy(opt + 20, export_name, nlen);
  memset(opt + 20 + nlen, 0, 2);
  if (writeall(fd, opt, 22 + nlen)) { close(fd); return -1; }
  for (;;) {                                         /* NBD_REP_INFO ... NBD_REP_ACK */
    unsigned char h[20]; char skip[4096];
    if (readall(fd, h, 20)) { close(fd); return -1; }
    uint32_t type, len;
    memcpy(&type, h + 12, 4); memcpy(&len, h + 16, 4);
    type = ntohl(type); len = ntohl(len);
    if (len > sizeof skip || readall(fd, skip, len)) { close(fd); return -1; }
    if (type == 1) return fd;
    if (type & 0x80000000u) { fprintf(stderr, "GO refused: 0x%x\n", type); close(fd); return -1; }
  }
}

/* 32 simultaneous connects can stall a server that negotiates in one process
   (nbd-server): retry a few times; the measurement only starts after the barrier. */
static int negotiate(void) {
  for (int attempt = 0; attempt < 5; attempt++) {
    int fd = negotiate_once();
    if (fd >= 0) return fd;
    fprintf(stderr, "negotiation attempt %d failed, retrying\n", attempt + 1);
  }
  return -1;
}

static uint64_t rnd(uint64_t *s) {                  /* xorshift64* */
  *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27; return *s * 2685821657736338717ULL;
}

static void *client(void *arg) {
  struct result *r = arg;
  uint64_t st = seed * 1000003 + r->id + 1;
  int fd = negotiate();
  size_t cap = per_client / minlen + 2;
  r->lat = malloc(cap * sizeof(double));
  char *buf = malloc(maxlen);
  pthread_barrier_wait(&barrier);
  if (fd < 0) { r->errors++; r->end = now(); return NULL; }
  uint64_t handle = 0;
  while (r->bytes < per_client && r->n < cap) {
    uint64_t len = minlen + (rnd(&st) % ((maxlen - minlen) / 4096 + 1)) * 4096;
    uint64_t off = (rnd(&st) % ((image_size - len) / 4096 + 1)) * 4096;
    unsigned char req[28]; uint32_t m = htonl(0x25609513), l = htonl(len);
    uint16_t z = 0; uint64_t hb = htobe64(++handle), ob = htobe64(off);
    memcpy(req, &m, 4); memcpy(req + 4, &z, 2); memcpy(req + 6, &z, 2);
    memcpy(req + 8, &hb, 8); memcpy(req + 16, &ob, 8); memcpy(req + 24, &l, 4);
    double t0 = now();
    unsigned char rep[16];
    if (writeall(fd, req, 28) || readall(fd, rep, 16)) { r->errors++; break; }
    uint32_t err; memcpy(&err, rep + 4, 4);
    if (ntohl(err) || memcmp(rep + 8, &hb, 8)) { r->errors++; break; }
    if (readall(fd, buf, len)) { r->errors++; break; }
    r->lat[r->n++] = now() - t0;
    r->bytes += len;
    char want[64];
    if (pread(image_fd, want, 64, off) != 64 || memcmp(want, buf, 64)) { r->errors++; break; }
  }
  r->end = now();
  /* NBD_CMD_DISC */
  unsigned char req[28] = {0}; uint32_t m = htonl(0x25609513); uint16_t t = htons(2);
  memcpy(req, &m, 4); memcpy(req + 6, &t, 2);
  writeall(fd, req, 28);
  close(fd); free(buf);
  return NULL;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 9) { fprintf(stderr, "usage: %s PORT EXPORT IMAGE CLIENTS BYTES MIN MAX SEED\n", argv[0]); return 2; }
  port = atoi(argv[1]); export_name = argv[2];
  image_fd = open(argv[3], O_RDONLY);
  struct stat sb; if (image_fd < 0 || fstat(image_fd, &sb)) { perror(argv[3]); return 2; }
  image_size = sb.st_size;
  nclients = atoi(argv[4]); per_client = strtoull(argv[5], 0, 0);
  minlen = strtoull(argv[6], 0, 0); maxlen = strtoull(argv[7], 0, 0); seed = strtoull(argv[8], 0, 0);
  pthread_barrier_init(&barrier, NULL, nclients + 1);
  pthread_t th[nclients]; struct result res[nclients];
  memset(res, 0, sizeof res);
  for (int i = 0; i < nclients; i++) res[i].id = i;
  for (int i = 0; i < nclients; i++) pthread_create(&th[i], NULL, client, &res[i]);
  pthread_barrier_wait(&barrier);
  double t0 = now(), end = t0;
  size_t total = 0; uint64_t bytes = 0; int errors = 0;
  for (int i = 0; i < nclients; i++) {
    pthread_join(th[i], NULL);
    total += res[i].n; bytes += res[i].bytes; errors += res[i].errors;
    if (res[i].end > end) end = res[i].end;
  }
  double *all = malloc((total + 1) * sizeof(double)); size_t k = 0;
  for (int i = 0; i < nclients; i++) { memcpy(all + k, res[i].lat, res[i].n * sizeof(double)); k += res[i].n; }
  qsort(all, total, sizeof(double), cmp);
  double secs = end - t0;
  printf("{\"bytes\": %llu, \"requests\": %zu, \"seconds\": %.4f, \"mbps\": %.1f, "
         "\"p50_ms\": %.2f, \"p99_ms\": %.2f, \"max_ms\": %.2f, \"errors\": %d}\n",
         (unsigned long long)bytes, total, secs, bytes / secs / 1e6,
         total ? all[total / 2] * 1e3 : 0, total ? all[(size_t)(total * 0.99)] * 1e3 : 0,
         total ? all[total - 1] * 1e3 : 0, errors);
  return errors ? 1 : 0;
}
