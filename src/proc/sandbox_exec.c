/* For syscall() and the Landlock syscall numbers. */
#define _GNU_SOURCE
#include "sandbox_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The sandbox helper: the code that runs in a child between fork and
 * exec.  It needs nothing but libc, so that it can also be built as the
 * small cap-sandbox binary, which starts in about a millisecond where
 * cap-server itself, with libcurl's and OpenSSL's libraries to load, takes
 * ten or more. */

/* Landlock's user-space interface, spelled out here because Debian
 * bookworm's kernel headers stop at an older ABI than the kernels this
 * runs on.  The numbers are the kernel's uapi and never change. */
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule       445
#define SYS_landlock_restrict_self  446
#endif
#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_RULE_PATH_BENEATH      1
#define LL_RULE_NET_PORT          2

#define LL_FS_EXECUTE          (1ULL << 0)
#define LL_FS_WRITE_FILE       (1ULL << 1)
#define LL_FS_READ_FILE        (1ULL << 2)
#define LL_FS_READ_DIR         (1ULL << 3)
#define LL_FS_REMOVE_DIR       (1ULL << 4)
#define LL_FS_REMOVE_FILE      (1ULL << 5)
#define LL_FS_MAKE_DIR         (1ULL << 7)
#define LL_FS_MAKE_REG         (1ULL << 8)
#define LL_FS_REFER            (1ULL << 13)
#define LL_FS_TRUNCATE         (1ULL << 14)
#define LL_FS_IOCTL_DEV        (1ULL << 15)
#define LL_NET_BIND_TCP        (1ULL << 0)
#define LL_NET_CONNECT_TCP     (1ULL << 1)
#define LL_SCOPE_ABSTRACT_UNIX (1ULL << 0)
#define LL_SCOPE_SIGNAL        (1ULL << 1)

/* Rights that apply to a file (not only to a directory). */
#define LL_FS_FILE_RIGHTS                                                                          \
  (LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV)
#define LL_RO (LL_FS_EXECUTE | LL_FS_READ_FILE | LL_FS_READ_DIR)
#define LL_RW                                                                                      \
  (LL_RO | LL_FS_WRITE_FILE | LL_FS_REMOVE_FILE | LL_FS_REMOVE_DIR | LL_FS_MAKE_DIR |              \
   LL_FS_MAKE_REG | LL_FS_REFER | LL_FS_TRUNCATE)
#define LL_DEV (LL_FS_READ_FILE | LL_FS_WRITE_FILE | LL_FS_READ_DIR | LL_FS_IOCTL_DEV)

int cap_sandbox_kernel_abi(void) {
  long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
  return v > 0 ? (int)v : 0;
}

struct ll_ruleset_attr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net; /* ABI 4. */
  uint64_t scoped;             /* ABI 6. */
};

struct ll_path_beneath_attr {
  uint64_t allowed_access;
  int32_t parent_fd;
} __attribute__((packed));

struct ll_net_port_attr {
  uint64_t allowed_access;
  uint64_t port;
};

#define EXIT_SETUP 126
#define EXIT_EXEC  127

#define MAX_PATHS 128

struct helper {
  int abi;
  long parent;
  const char *ro[MAX_PATHS], *rw[MAX_PATHS], *dev[MAX_PATHS];
  size_t nro, nrw, ndev;
  int ro_fd[8];
  size_t nro_fd;
  long ports[8];
  size_t nports;
  long as_mb, data_mb, cpu_s, fsize_mb, nofile, nproc, nice;
  int io_class, io_level;
  char **prog_argv;
};

/* Prints why the helper stops.  Only async-signal-safe work is needed, but
 * stdio is fine: this process is single-threaded and about to exit. */
static int die(int code, const char *what, const char *detail, int err) {
  fprintf(stderr, "cap-server sandbox: %s%s%s%s%s\n", what, detail ? " " : "", detail ? detail : "",
          err ? ": " : "", err ? strerror(err) : "");
  return code;
}

static int parse_long(const char *s, long min, long max, long *out) {
  char *end;
  errno = 0;
  long v = s ? strtol(s, &end, 10) : 0;
  if (s == NULL || *s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
    return -EINVAL;
  *out = v;
  return 0;
}

static int add_path(const char **list, size_t *n, const char *p) {
  if (p == NULL || *n >= MAX_PATHS)
    return -EINVAL;
  list[(*n)++] = p;
  return 0;
}

/* Parses one option at argv[*i] (its value at argv[*i + 1]). */
static int parse_opt(struct helper *h, char **argv, int argc, int *i) {
  const char *o = argv[*i], *val = *i + 1 < argc ? argv[*i + 1] : NULL;
  long v = 0;
  int rc = -EINVAL;
  (*i)++;
  if (strcmp(o, "--ro") == 0)
    rc = add_path(h->ro, &h->nro, val);
  else if (strcmp(o, "--rw") == 0)
    rc = add_path(h->rw, &h->nrw, val);
  else if (strcmp(o, "--dev") == 0)
    rc = add_path(h->dev, &h->ndev, val);
  else if (strcmp(o, "--ionice") == 0) {
    rc = val && sscanf(val, "%d:%d", &h->io_class, &h->io_level) == 2 && h->io_class >= 1 &&
                 h->io_class <= 3 && h->io_level >= 0 && h->io_level <= 7
             ? 0
             : -EINVAL;
  } else {
    static const char *const names[] = {"--abi",   "--parent", "--ro-fd",    "--connect",
                                        "--as-mb", "--cpu-s",  "--fsize-mb", "--nofile",
                                        "--nproc", "--nice",   "--data-mb",  NULL};
    long *dst[] = {NULL,         &h->parent, NULL,      NULL,     &h->as_mb,  &h->cpu_s,
                   &h->fsize_mb, &h->nofile, &h->nproc, &h->nice, &h->data_mb};
    for (size_t k = 0; names[k]; k++) {
      if (strcmp(o, names[k]) != 0)
        continue;
      if ((rc = parse_long(val, 0, INT_MAX, &v)) != 0)
        break;
      if (k == 0)
        h->abi = (int)v;
      else if (k == 2)
        rc = h->nro_fd < 8 ? (h->ro_fd[h->nro_fd++] = (int)v, 0) : -EINVAL;
      else if (k == 3)
        rc = h->nports < 8 && v > 0 && v < 65536 ? (h->ports[h->nports++] = v, 0) : -EINVAL;
      else
        *dst[k] = v;
      break;
    }
  }
  (*i)++;
  return rc;
}

static int parse_helper(struct helper *h, int argc, char **argv) {
  memset(h, 0, sizeof(*h));
  h->abi = -1;
  int i = 1;
  while (i < argc && strcmp(argv[i], "--") != 0)
    if (parse_opt(h, argv, argc, &i) != 0)
      return die(EXIT_SETUP, "bad option", argv[i - 2 < 1 ? 1 : i - 2], 0);
  if (i >= argc - 1 || h->abi < 0)
    return die(EXIT_SETUP, "usage: cap-sandbox --abi N [OPTION]... -- PROGRAM [ARG]...", NULL, 0);
  h->prog_argv = argv + i + 1;
  return 0;
}

/* Finds prog along PATH as execvp would, so that the Landlock rule and
 * execv name the same file.  Returns 0 with the path in out, or -errno. */
static int resolve(const char *prog, char *out, size_t n) {
  if (strchr(prog, '/'))
    return snprintf(out, n, "%s", prog) < (int)n ? 0 : -ENAMETOOLONG;
  const char *path = getenv("PATH");
  if (path == NULL)
    path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    size_t len = strcspn(path, ":");
    if (len > 0 && (size_t)snprintf(out, n, "%.*s/%s", (int)len, path, prog) < n &&
        access(out, X_OK) == 0)
      return 0;
    path += len + (path[len] == ':');
  }
  return -ENOENT;
}

static int set_limit(int res, long soft, long hard) {
  struct rlimit rl = {.rlim_cur = (rlim_t)soft, .rlim_max = (rlim_t)hard};
  struct rlimit cur;
  /* Never ask for more than the hard limit already in force: that would
   * need privileges, and lowering is all this is for. */
  if (getrlimit(res, &cur) == 0 && cur.rlim_max != RLIM_INFINITY) {
    if (rl.rlim_max > cur.rlim_max)
      rl.rlim_max = cur.rlim_max;
    if (rl.rlim_cur > rl.rlim_max)
      rl.rlim_cur = rl.rlim_max;
  }
  return setrlimit(res, &rl) == 0 ? 0 : -errno;
}

static int apply_limits(const struct helper *h) {
  const long mib = 1024L * 1024L;
  if (h->as_mb && set_limit(RLIMIT_AS, h->as_mb * mib, h->as_mb * mib) != 0)
    return die(EXIT_SETUP, "setrlimit", "RLIMIT_AS", errno);
  if (h->data_mb && set_limit(RLIMIT_DATA, h->data_mb * mib, h->data_mb * mib) != 0)
    return die(EXIT_SETUP, "setrlimit", "RLIMIT_DATA", errno);
  /* SIGXCPU at the soft limit, SIGKILL 5 s of CPU later. */
  if (h->cpu_s && set_limit(RLIMIT_CPU, h->cpu_s, h->cpu_s + 5) != 0)
    return die(EXIT_SETUP, "setrlimit", "RLIMIT_CPU", errno);
  if (h->fsize_mb && set_limit(RLIMIT_FSIZE, h->fsize_mb * mib, h->fsize_mb * mib) != 0)
    return die(EXIT_SETUP, "setrlimit", "RLIMIT_FSIZE", errno);
  if (h->nofile && set_limit(RLIMIT_NOFILE, h->nofile, h->nofile) != 0)
    return die(EXIT_SETUP, "setrlimit", "RLIMIT_NOFILE", errno);
  if (h->nproc && set_limit(RLIMIT_NPROC, h->nproc, h->nproc) != 0)
    return die(EXIT_SETUP, "setrlimit", "RLIMIT_NPROC", errno);
  if (h->nice && setpriority(PRIO_PROCESS, 0, (int)h->nice) != 0)
    return die(EXIT_SETUP, "setpriority", NULL, errno);
  if (h->io_class) {
    int prio = (h->io_class << 13) | (h->io_class == 3 ? 0 : h->io_level);
    /* IOPRIO_WHO_PROCESS, this process. */
    if (syscall(SYS_ioprio_set, 1, 0, prio) != 0)
      return die(EXIT_SETUP, "ioprio_set", NULL, errno);
  }
  return 0;
}

static uint64_t handled_fs(int abi) {
  uint64_t fs = (1ULL << 13) - 1; /* ABI 1: EXECUTE .. MAKE_SYM. */
  if (abi >= 2)
    fs |= LL_FS_REFER;
  if (abi >= 3)
    fs |= LL_FS_TRUNCATE;
  if (abi >= 5)
    fs |= LL_FS_IOCTL_DEV;
  return fs;
}

/* Allows access beneath the file or directory open as fd. */
static int rule_fd(int ruleset, int fd, uint64_t access, uint64_t handled) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return -errno;
  if (!S_ISDIR(st.st_mode))
    access &= LL_FS_FILE_RIGHTS;
  struct ll_path_beneath_attr pb = {.allowed_access = access & handled, .parent_fd = fd};
  if (pb.allowed_access == 0)
    return 0;
  return syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &pb, 0) == 0 ? 0 : -errno;
}

/* Allows access beneath path; a path that does not exist is skipped. */
static int rule_path(int ruleset, const char *path, uint64_t access, uint64_t handled) {
  int fd = open(path, O_PATH | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT || errno == ENOTDIR ? 0 : die(EXIT_SETUP, "open", path, errno);
  int rc = rule_fd(ruleset, fd, access, handled);
  close(fd);
  return rc == 0 ? 0 : die(EXIT_SETUP, "landlock_add_rule", path, -rc);
}

static int add_rules(const struct helper *h, int rs, uint64_t fs, const char *prog) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < h->nro; i++)
    rc = rule_path(rs, h->ro[i], LL_RO, fs);
  for (size_t i = 0; rc == 0 && i < h->nrw; i++)
    rc = rule_path(rs, h->rw[i], LL_RW, fs);
  for (size_t i = 0; rc == 0 && i < h->ndev; i++)
    rc = rule_path(rs, h->dev[i], LL_DEV, fs);
  for (size_t i = 0; rc == 0 && i < h->nro_fd; i++)
    if ((rc = rule_fd(rs, h->ro_fd[i], LL_FS_READ_FILE, fs)) != 0)
      rc = die(EXIT_SETUP, "landlock_add_rule", "for the input descriptor", -rc);
  /* The program itself, wherever it lives (an ffmpeg under /opt). */
  if (rc == 0)
    rc = rule_path(rs, prog, LL_FS_EXECUTE | LL_FS_READ_FILE, fs);
  for (size_t i = 0; rc == 0 && h->abi >= 4 && i < h->nports; i++) {
    struct ll_net_port_attr np = {.allowed_access = LL_NET_CONNECT_TCP,
                                  .port = (uint64_t)h->ports[i]};
    if (syscall(SYS_landlock_add_rule, rs, LL_RULE_NET_PORT, &np, 0) != 0)
      rc = die(EXIT_SETUP, "landlock_add_rule", "for the input port", errno);
  }
  return rc;
}

static int apply_landlock(const struct helper *h, const char *prog) {
  if (h->abi <= 0)
    return 0;
  struct ll_ruleset_attr attr = {.handled_access_fs = handled_fs(h->abi)};
  size_t size = sizeof(attr.handled_access_fs);
  if (h->abi >= 4) {
    attr.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
    size = offsetof(struct ll_ruleset_attr, scoped);
  }
  if (h->abi >= 6) {
    attr.scoped = LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL;
    size = sizeof(attr);
  }
  int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
  if (rs < 0)
    return die(EXIT_SETUP, "landlock_create_ruleset", NULL, errno);
  int rc = add_rules(h, rs, attr.handled_access_fs, prog);
  if (rc == 0 && syscall(SYS_landlock_restrict_self, rs, 0) != 0)
    rc = die(EXIT_SETUP, "landlock_restrict_self", NULL, errno);
  close(rs);
  return rc;
}

int cap_sandbox_exec_main(int argc, char **argv) {
  struct helper h;
  char prog[PATH_MAX];
  int rc;

  if ((rc = parse_helper(&h, argc, argv)) != 0)
    return rc;
  /* A child must never outlive a server that was killed; the check after
   * the prctl closes the window in which the server died before it. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
    return die(EXIT_SETUP, "prctl(PR_SET_PDEATHSIG)", NULL, errno);
  if (h.parent && getppid() != (pid_t)h.parent)
    return die(EXIT_SETUP, "the server has gone", NULL, 0);
  if ((rc = resolve(h.prog_argv[0], prog, sizeof(prog))) != 0)
    return die(EXIT_EXEC, "cannot find", h.prog_argv[0], -rc);
  if ((rc = apply_limits(&h)) != 0)
    return rc;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return die(EXIT_SETUP, "prctl(PR_SET_NO_NEW_PRIVS)", NULL, errno);
  if ((rc = apply_landlock(&h, prog)) != 0)
    return rc;
  execv(prog, h.prog_argv);
  return die(EXIT_EXEC, "cannot execute", prog, errno);
}
