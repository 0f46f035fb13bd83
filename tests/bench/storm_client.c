/* The 8:00 storm's clients (tests/bench/storm_bench.py): one process, one epoll loop, N NBD
 * connections, each from its own source address (a classroom is N machines), all connect()ed in
 * one burst, each replaying a boot trace's reads in order with one request in flight (a booting
 * kernel waiting on its root), every reply's bytes checked against a hash of the image's bytes.
 *
 *   storm_client run HOST PORT EXPORT READS HASHES CLIENTS FIRST_SOURCE TIMEOUT_S
 *   storm_client hash IMAGE READS HASHES         (the expected hashes, computed from the file)
 *
 * READS: one "offset length" per line. HASHES: one 16-hex-digit hash per line (same order).
 * FIRST_SOURCE: the address of client 0 (e.g. 127.1.0.1); client i binds FIRST_SOURCE + i.
 * run prints one JSON object: the time until every session was open (connect + NBD_OPT_GO),
 * each client's completion time (seconds from the burst), request latencies p50/p99/max,
 * bytes, errors, and this process's own CPU seconds (the client must cost less than a server).
 * Every wait is bounded by TIMEOUT_S. A session not open HANDSHAKE_S after its connect() (no
 * greeting: a server whose accept queue overflowed can leave the client's side ESTABLISHED while
 * it never saw the connection) is closed and connected again, at most ATTEMPTS times, as a PC's
 * boot retries; the count is reported.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CONNECTING, GREETING, OPT_HEADER, OPT_DATA, REPLY, DATA, DONE, FAILED };
#define HANDSHAKE_S 10.0
#define ATTEMPTS 5

struct client {
  int fd, state, id, attempts;
  double connect_at;
  size_t next;            /* index of the read in flight (or to send) */
  size_t need, have;      /* bytes wanted / read into buf for the current state */
  unsigned char hdr[64];
  unsigned char *buf;
  uint32_t optlen;
  double open_at, done_at, sent_at;
  double *lat;
  const char *error;
};

static size_t nreads;
static uint64_t *offsets, *hashes;
static uint32_t *lengths, maxlen;
static const char *export_name;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* 8 bytes at a time; the tail byte-wise. Cheap enough to check every byte of every reply. */
static uint64_t hash(const unsigned char *p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
  }
  for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h ^ (h >> 32);
}

static int load_reads(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) { perror(path); return -1; }
  size_t cap = 1024;
  offsets = malloc(cap * sizeof *offsets);
  lengths = malloc(cap * sizeof *lengths);
  unsigned long long o, l;
  while (fscanf(f, "%llu %llu", &o, &l) == 2) {
    if (nreads == cap) {
      cap *= 2;
      offsets = realloc(offsets, cap * sizeof *offsets);
      lengths = realloc(lengths, cap * sizeof *lengths);
    }
    if (l == 0 || l > (64u << 20)) { fprintf(stderr, "%s: bad length %llu\n", path, l); return -1; }
    offsets[nreads] = o;
    lengths[nreads++] = (uint32_t)l;
    if (l > maxlen) maxlen = (uint32_t)l;
  }
  fclose(f);
  return nreads ? 0 : -1;
}

static int do_hash(const char *image, const char *reads, const char *out) {
  if (load_reads(reads)) return 2;
  int fd = open(image, O_RDONLY);
  FILE *o = fopen(out, "w");
  if (fd < 0 || !o) { perror("open"); return 2; }
  unsigned char *buf = malloc(maxlen);
  for (size_t i = 0; i < nreads; i++) {
    if (pread(fd, buf, lengths[i], offsets[i]) != (ssize_t)lengths[i]) {
      fprintf(stderr, "read %zu (%llu+%u) beyond the image\n", i, (unsigned long long)offsets[i], lengths[i]);
      return 2;
    }
    fprintf(o, "%016llx\n", (unsigned long long)hash(buf, lengths[i]));
  }
  fclose(o);
  return 0;
}

static int load_hashes(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) { perror(path); return -1; }
  hashes = malloc(nreads * sizeof *hashes);
  for (size_t i = 0; i < nreads; i++) {
    unsigned long long h;
    if (fscanf(f, "%llx", &h) != 1) { fprintf(stderr, "%s: %zu hashes, want %zu\n", path, i, nreads); return -1; }
    hashes[i] = h;
  }
  fclose(f);
  return 0;
}

static void fail(struct client *c, const char *why) {
  if (c->state != FAILED && c->state != DONE) {
    c->state = FAILED;
    c->error = why;
    c->done_at = now();
    close(c->fd);
  }
}

static int send_all(struct client *c, const void *p, size_t n) {
  /* the socket is fresh or idle (one request in flight): a short write would be a bug */
  ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
  if (r != (ssize_t)n) { fail(c, "send"); return -1; }
  return 0;
}

static void send_read(struct client *c) {
  unsigned char req[28];
  uint32_t magic = htonl(0x25609513), len = htonl(lengths[c->next]);
  uint16_t zero = 0;
  uint64_t handle = htobe64(c->next + 1), off = htobe64(offsets[c->next]);
  memcpy(req, &magic, 4); memcpy(req + 4, &zero, 2); memcpy(req + 6, &zero, 2);
  memcpy(req + 8, &handle, 8); memcpy(req + 16, &off, 8); memcpy(req + 24, &len, 4);
  c->sent_at = now();
  if (send_all(c, req, 28) == 0) { c->state = REPLY; c->need = 16; c->have = 0; }
}

static void opened(struct client *c) {
  c->open_at = now();
  send_read(c);
}

static void send_go(struct client *c) {
  uint32_t flags = htonl(3);                       /* FIXED_NEWSTYLE | NO_ZEROES */
  size_t nlen = strlen(export_name);
  unsigned char opt[4 + 16 + 4 + 256 + 2];
  uint64_t magic = htobe64(0x49484156454F5054ULL);
  uint32_t code = htonl(7), dlen = htonl(4 + nlen + 2), nl = htonl(nlen);
  memcpy(opt, &flags, 4);
  memcpy(opt + 4, &magic, 8); memcpy(opt + 12, &code, 4); memcpy(opt + 16, &dlen, 4);
  memcpy(opt + 20, &nl, 4); memcpy(opt + 24, export_name, nlen);
  memset(opt + 24 + nlen, 0, 2);
  if (send_all(c, opt, 26 + nlen) == 0) { c->state = OPT_HEADER; c->need = 20; c->have = 0; }
}

/* The bytes of the current state are all in: act, and say what comes next. */
static void step(struct client *c) {
  switch (c->state) {
  case GREETING:
    if (memcmp(c->hdr, "NBDMAGICIHAVEOPT", 16)) return fail(c, "not a fixed newstyle server");
    return send_go(c);
  case OPT_HEADER: {
    uint32_t type, len;
    memcpy(&type, c->hdr + 12, 4); memcpy(&len, c->hdr + 16, 4);
    type = ntohl(type); len = ntohl(len);
    if (type & 0x80000000u) return fail(c, "NBD_OPT_GO refused");
    if (len > sizeof c->hdr) return fail(c, "option reply too long");
    c->optlen = type;                     /* remembered: REP_ACK (1) ends the negotiation */
    if (len == 0) {
      if (type == 1) return opened(c);
      c->need = 20; c->have = 0;
      return;
    }
    c->state = OPT_DATA; c->need = len; c->have = 0;
    return;
  }
  case OPT_DATA:
    if (c->optlen == 1) return opened(c);
    c->state = OPT_HEADER; c->need = 20; c->have = 0;
    return;
  case REPLY: {
    uint32_t magic, err;
    uint64_t handle;
    memcpy(&magic, c->hdr, 4); memcpy(&err, c->hdr + 4, 4); memcpy(&handle, c->hdr + 8, 8);
    if (ntohl(magic) != 0x67446698 || err || be64toh(handle) != c->next + 1) return fail(c, "bad reply");
    c->state = DATA; c->need = lengths[c->next]; c->have = 0;
    return;
  }
  case DATA:
    c->lat[c->next] = now() - c->sent_at;
    if (hash(c->buf, lengths[c->next]) != hashes[c->next]) return fail(c, "wrong bytes");
    if (++c->next == nreads) {
      unsigned char req[28] = {0};
      uint32_t magic = htonl(0x25609513);
      uint16_t disc = htons(2);
      memcpy(req, &magic, 4); memcpy(req + 6, &disc, 2);
      send(c->fd, req, 28, MSG_NOSIGNAL);
      c->state = DONE; c->done_at = now();
      close(c->fd);
      return;
    }
    return send_read(c);
  }
}

static void readable(struct client *c) {
  for (int rounds = 0; rounds < 64 && c->state != DONE && c->state != FAILED; rounds++) {
    unsigned char *into = c->state == DATA ? c->buf : c->hdr;
    ssize_t r = recv(c->fd, into + c->have, c->need - c->have, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return fail(c, r == 0 ? "closed by the server" : "recv");
    c->have += r;
    if (c->have == c->need) step(c);
  }
}

static struct sockaddr_in server_addr;
static struct in_addr first_source;
static int reconnects;

/* bind to this client's own address, connect() without waiting, watch it */
static void start_connect(struct client *c, int ep) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(c->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in src = { .sin_family = AF_INET };
  src.sin_addr.s_addr = htonl(ntohl(first_source.s_addr) + c->id);
  c->attempts++;
  c->connect_at = now();
  c->state = CONNECTING;
  if (bind(c->fd, (struct sockaddr *)&src, sizeof src)) { perror("bind"); fail(c, "bind"); return; }
  if (connect(c->fd, (struct sockaddr *)&server_addr, sizeof server_addr) && errno != EINPROGRESS) {
    fail(c, "connect");
    return;
  }
  struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* no session yet after HANDSHAKE_S: close (the fd leaves the epoll set) and try again */
static void retry_stuck(struct client *cs, int n, int ep) {
  double t = now();
  for (int i = 0; i < n; i++) {
    struct client *c = &cs[i];
    if (c->state > OPT_DATA || c->open_at || t - c->connect_at < HANDSHAKE_S) continue;
    if (c->fd >= 0) close(c->fd);
    if (c->attempts >= ATTEMPTS) {
      c->state = FAILED; c->error = "no session after 5 connects"; c->done_at = t;
      continue;
    }
    reconnects++;
    start_connect(c, ep);
  }
}

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double q) {
  if (!n) return 0;
  size_t i = (size_t)(q * (n - 1) + 0.5);
  return v[i];
}

static int run(char **argv) {
  const char *host = argv[0];
  int port = atoi(argv[1]);
  export_name = argv[2];
  if (strlen(export_name) > 255 || load_reads(argv[3]) || load_hashes(argv[4])) return 2;
  int n = atoi(argv[5]);
  struct in_addr first;
  if (n < 1 || !inet_aton(argv[6], &first)) { fprintf(stderr, "bad CLIENTS or FIRST_SOURCE\n"); return 2; }
  double timeout = atof(argv[7]);
  server_addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(port) };
  first_source = first;
  if (!inet_aton(host, &server_addr.sin_addr)) { fprintf(stderr, "bad HOST\n"); return 2; }

  struct rlimit rl = { 4096, 4096 };
  setrlimit(RLIMIT_NOFILE, &rl);
  int ep = epoll_create1(0);
  struct client *cs = calloc(n, sizeof *cs);
  for (int i = 0; i < n; i++) {
    cs[i].id = i;
    cs[i].buf = malloc(maxlen);
    cs[i].lat = calloc(nreads, sizeof(double));
  }
  /* the burst: every socket bound and connect()ed before any answer is read */
  double t0 = now();
  for (int i = 0; i < n; i++) start_connect(&cs[i], ep);
  int left = n;
  struct epoll_event evs[256];
  while (left > 0 && now() - t0 < timeout) {
    int k = epoll_wait(ep, evs, 256, 200);
    for (int j = 0; j < k; j++) {
      struct client *c = evs[j].data.ptr;
      if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {                    /* refused or timed out: retry_stuck connects again in 1 s */
          close(c->fd); c->fd = -1;
          c->connect_at = now() - HANDSHAKE_S + 1.0;
          continue;
        }
        if (!(evs[j].events & EPOLLOUT)) continue;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->state = GREETING; c->need = 18; c->have = 0;
        continue;
      }
      if (c->state != DONE && c->state != FAILED) readable(c);
    }
    retry_stuck(cs, n, ep);
    left = 0;
    for (int i = 0; i < n; i++) left += cs[i].state != DONE && cs[i].state != FAILED;
  }
  double end = now();
  int errors = 0, never_opened = 0;
  const char *first_error = "";
  double all_open = 0;
  double *done = malloc(n * sizeof(double));
  size_t nlat = 0;
  double *lat = malloc((size_t)n * nreads * sizeof(double));
  uint64_t bytes = 0;
  for (int i = 0; i < n; i++) {
    struct client *c = &cs[i];
    if (c->state != DONE) {
      errors++;
      if (c->state != FAILED) { c->error = "timed out"; close(c->fd); }
      if (!*first_error) first_error = c->error;
      c->done_at = end;
    }
    if (c->open_at == 0) never_opened++;
    else if (c->open_at - t0 > all_open) all_open = c->open_at - t0;
    done[i] = c->done_at - t0;
    for (size_t r = 0; r < c->next; r++) { lat[nlat++] = c->lat[r]; bytes += lengths[r]; }
  }
  qsort(done, n, sizeof(double), cmpd);
  qsort(lat, nlat, sizeof(double), cmpd);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  printf("{\"clients\": %d, \"reads_per_client\": %zu, \"all_open_s\": %.4f, \"never_opened\": %d, "
         "\"seconds\": %.4f, \"bytes\": %llu, \"mbps\": %.1f, "
         "\"done_p50_s\": %.4f, \"done_p90_s\": %.4f, \"done_max_s\": %.4f, \"done_min_s\": %.4f, "
         "\"lat_p50_ms\": %.3f, \"lat_p99_ms\": %.3f, \"lat_max_ms\": %.3f, "
         "\"client_cpu_s\": %.3f, \"reconnects\": %d, \"errors\": %d, \"first_error\": \"%s\"}\n",
         n, nreads, all_open, never_opened, end - t0, (unsigned long long)bytes, bytes / (end - t0) / 1e6,
         pct(done, n, 0.5), pct(done, n, 0.9), done[n - 1], done[0],
         pct(lat, nlat, 0.5) * 1e3, pct(lat, nlat, 0.99) * 1e3, nlat ? lat[nlat - 1] * 1e3 : 0,
         cpu, reconnects, errors, first_error);
  return errors ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && !strcmp(argv[1], "hash")) return do_hash(argv[2], argv[3], argv[4]);
  if (argc == 10 && !strcmp(argv[1], "run")) return run(argv + 2);
  fprintf(stderr, "usage: %s run HOST PORT EXPORT READS HASHES CLIENTS FIRST_SOURCE TIMEOUT_S\n"
                  "       %s hash IMAGE READS HASHES\n", argv[0], argv[0]);
  return 2;
}
