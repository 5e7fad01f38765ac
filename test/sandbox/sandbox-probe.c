/* sandbox-probe: performs one action named in argv and reports the result,
 * for test/integration/test_sandbox.py, which runs it through
 * `cap-server --sandbox-exec ... -- sandbox-probe ACTION [ARG]...`.
 *
 * Output on stdout, one line: `ok` (or the value asked for) and exit 0, or
 * the errno name of the failing call (EACCES, EPERM, ...) and exit 1.  A
 * resource limit that kills the process (SIGXCPU, SIGXFSZ, SIGKILL) shows as
 * that signal in the exit status.  Usage errors exit 2.
 *
 * Actions:
 *   read PATH          open PATH read-only and read it to the end
 *   write PATH         create/truncate PATH and write a line to it
 *   mkfile DIR         create a new file inside DIR (prints its path)
 *   remove PATH        unlink PATH
 *   connect PORT       TCP connect to 127.0.0.1:PORT
 *   bind PORT          bind a TCP socket to 127.0.0.1:PORT
 *   uconnect NAME      connect to the abstract unix stream socket @NAME
 *   alloc MB           malloc MB MiB and touch every page
 *   burn               spin on the CPU until killed
 *   bigfile PATH MB    write MB MiB to PATH
 *   openmany N         open /dev/null N times (keeping every descriptor)
 *   fork N             fork N children that sleep; they are killed before exit
 *   nice               print getpriority(PRIO_PROCESS, 0)
 *   ionice             print the I/O priority as CLASS:LEVEL
 *   privs              print `nnp=N pdeathsig=N` (no_new_privs, parent-death signal)
 *   kill PID           kill(PID, 0)
 *   sleep S            sleep S seconds
 *
 * No dependency beyond libc; it must not be built with sanitizers (they
 * reserve address space and would trip --as-mb).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *errno_name(int e) {
  switch (e) {
  case EACCES:
    return "EACCES";
  case EPERM:
    return "EPERM";
  case ENOENT:
    return "ENOENT";
  case ENOMEM:
    return "ENOMEM";
  case EFBIG:
    return "EFBIG";
  case EMFILE:
    return "EMFILE";
  case ENFILE:
    return "ENFILE";
  case EAGAIN:
    return "EAGAIN";
  case ECONNREFUSED:
    return "ECONNREFUSED";
  case EADDRINUSE:
    return "EADDRINUSE";
  case EADDRNOTAVAIL:
    return "EADDRNOTAVAIL";
  case ESRCH:
    return "ESRCH";
  case EINVAL:
    return "EINVAL";
  case EROFS:
    return "EROFS";
  case EXDEV:
    return "EXDEV";
  case EEXIST:
    return "EEXIST";
  case ENOTDIR:
    return "ENOTDIR";
  case EISDIR:
    return "EISDIR";
  case ENOSPC:
    return "ENOSPC";
  case EIO:
    return "EIO";
  case EBADF:
    return "EBADF";
  case ETIMEDOUT:
    return "ETIMEDOUT";
  case ENETUNREACH:
    return "ENETUNREACH";
  case EAFNOSUPPORT:
    return "EAFNOSUPPORT";
  case EINTR:
    return "EINTR";
  default:
    break;
  }
  static char buf[32];
  snprintf(buf, sizeof buf, "E%d", e);
  return buf;
}

static int fail(void) {
  printf("%s\n", errno_name(errno));
  fflush(stdout);
  return 1;
}

static int ok(void) {
  printf("ok\n");
  fflush(stdout);
  return 0;
}

static long num(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end) {
    fprintf(stderr, "sandbox-probe: not a number: %s\n", s);
    exit(2);
  }
  return v;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int do_read(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail();
  char buf[4096];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r == 0)
      break;
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return fail();
    }
  }
  close(fd);
  return ok();
}

static int do_write(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail();
  if (write_all(fd, "sandbox-probe\n", 14) < 0)
    return fail();
  if (close(fd) < 0)
    return fail();
  return ok();
}

static int do_mkfile(const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/probe-%ld", dir, (long)getpid());
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail();
  if (write_all(fd, "sandbox-probe\n", 14) < 0)
    return fail();
  close(fd);
  printf("ok %s\n", path);
  fflush(stdout);
  return 0;
}

static int do_remove(const char *path) {
  if (unlink(path) < 0)
    return fail();
  return ok();
}

static int inet_sock(long port, struct sockaddr_in *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((unsigned short)port);
  sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

static int do_connect(long port) {
  struct sockaddr_in sa;
  int s = inet_sock(port, &sa);
  if (s < 0)
    return fail();
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0)
    return fail();
  close(s);
  return ok();
}

static int do_bind(long port) {
  struct sockaddr_in sa;
  int s = inet_sock(port, &sa);
  if (s < 0)
    return fail();
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0)
    return fail();
  close(s);
  return ok();
}

static int do_uconnect(const char *name) {
  struct sockaddr_un sa;
  size_t n = strlen(name);
  if (n + 1 > sizeof sa.sun_path) {
    fprintf(stderr, "sandbox-probe: name too long\n");
    return 2;
  }
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path + 1, name, n); /* sun_path[0] == 0: abstract */
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0)
    return fail();
  if (connect(s, (struct sockaddr *)&sa,
              (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0)
    return fail();
  close(s);
  return ok();
}

static int do_alloc(long mb) {
  size_t n = (size_t)mb << 20;
  volatile char *p = malloc(n);
  if (!p)
    return fail();
  long page = sysconf(_SC_PAGESIZE);
  for (size_t i = 0; i < n; i += (size_t)page)
    p[i] = 1;
  return ok();
}

static int do_burn(void) {
  volatile unsigned long x = 0;
  for (;;)
    x++;
  return 0;
}

static int do_bigfile(const char *path, long mb) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail();
  static char chunk[65536];
  memset(chunk, 'x', sizeof chunk);
  long chunks = mb * (long)((1 << 20) / sizeof chunk);
  for (long i = 0; i < chunks; i++)
    if (write_all(fd, chunk, sizeof chunk) < 0)
      return fail();
  close(fd);
  return ok();
}

static int do_openmany(long n) {
  for (long i = 0; i < n; i++)
    if (open("/dev/null", O_RDONLY) < 0)
      return fail();
  return ok();
}

static int do_fork(long n) {
  pid_t *kids = calloc((size_t)(n > 0 ? n : 1), sizeof *kids);
  if (!kids)
    return fail();
  long made = 0;
  int err = 0;
  for (; made < n; made++) {
    pid_t p = fork();
    if (p < 0) {
      err = errno;
      break;
    }
    if (p == 0) {
      sleep(30);
      _exit(0);
    }
    kids[made] = p;
  }
  for (long i = 0; i < made; i++)
    kill(kids[i], SIGKILL);
  for (long i = 0; i < made; i++)
    waitpid(kids[i], NULL, 0);
  if (err) {
    errno = err;
    return fail();
  }
  return ok();
}

static int do_nice(void) {
  errno = 0;
  int v = getpriority(PRIO_PROCESS, 0);
  if (v == -1 && errno)
    return fail();
  printf("%d\n", v);
  fflush(stdout);
  return 0;
}

static int do_ionice(void) {
  /* IOPRIO_WHO_PROCESS == 1; class in the bits above 13. */
  long v = syscall(SYS_ioprio_get, 1, 0);
  if (v < 0)
    return fail();
  printf("%ld:%ld\n", (v >> 13) & 0x7, v & 0x1fff);
  fflush(stdout);
  return 0;
}

static int do_privs(void) {
  int nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
  if (nnp < 0)
    return fail();
  int sig = 0;
  if (prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0) < 0)
    return fail();
  printf("nnp=%d pdeathsig=%d\n", nnp, sig);
  fflush(stdout);
  return 0;
}

static int do_kill(long pid) {
  if (kill((pid_t)pid, 0) < 0)
    return fail();
  return ok();
}

static int do_sleep(long s) {
  sleep((unsigned)s);
  return ok();
}

static int usage(void) {
  fprintf(stderr, "usage: sandbox-probe ACTION [ARG]... (see the source for the actions)\n");
  return 2;
}

int main(int argc, char **argv) {
  /* A limit that kills with a core-dumping signal must not leave cores or
   * wait on a core handler. */
  struct rlimit nocore = {0, 0};
  setrlimit(RLIMIT_CORE, &nocore);
  setvbuf(stdout, NULL, _IOLBF, 0);

  if (argc < 2)
    return usage();
  const char *a = argv[1];
  int n = argc - 2;
  char **v = argv + 2;

  if (!strcmp(a, "read") && n == 1)
    return do_read(v[0]);
  if (!strcmp(a, "write") && n == 1)
    return do_write(v[0]);
  if (!strcmp(a, "mkfile") && n == 1)
    return do_mkfile(v[0]);
  if (!strcmp(a, "remove") && n == 1)
    return do_remove(v[0]);
  if (!strcmp(a, "connect") && n == 1)
    return do_connect(num(v[0]));
  if (!strcmp(a, "bind") && n == 1)
    return do_bind(num(v[0]));
  if (!strcmp(a, "uconnect") && n == 1)
    return do_uconnect(v[0]);
  if (!strcmp(a, "alloc") && n == 1)
    return do_alloc(num(v[0]));
  if (!strcmp(a, "burn") && n == 0)
    return do_burn();
  if (!strcmp(a, "bigfile") && n == 2)
    return do_bigfile(v[0], num(v[1]));
  if (!strcmp(a, "openmany") && n == 1)
    return do_openmany(num(v[0]));
  if (!strcmp(a, "fork") && n == 1)
    return do_fork(num(v[0]));
  if (!strcmp(a, "nice") && n == 0)
    return do_nice();
  if (!strcmp(a, "ionice") && n == 0)
    return do_ionice();
  if (!strcmp(a, "privs") && n == 0)
    return do_privs();
  if (!strcmp(a, "kill") && n == 1)
    return do_kill(num(v[0]));
  if (!strcmp(a, "sleep") && n == 1)
    return do_sleep(num(v[0]));
  return usage();
}
