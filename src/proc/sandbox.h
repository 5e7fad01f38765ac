#ifndef CAP_SANDBOX_H
#define CAP_SANDBOX_H

#include "buf.h"
#include "sandbox_exec.h"

#include <stddef.h>

/* The sandbox around every child (ffmpeg, ffprobe).  uv_spawn has no hook
 * between fork and exec, so the child is cap-server itself, re-executed in
 * a helper mode (cap_sandbox_exec_main) that sets no_new_privs,
 * PR_SET_PDEATHSIG, resource limits, nice and ionice, applies a Landlock
 * ruleset, and then executes the real program with its argv unchanged.
 *
 * What Landlock can enforce depends on the kernel's ABI version:
 *   1  file system: read, write, execute only beneath the allowed paths
 *   2  + renames and links across directories (REFER)
 *   3  + truncation
 *   4  + TCP bind and connect
 *   5  + ioctl on device nodes
 *   6  + signals and abstract unix sockets scoped to the sandbox
 * The server probes the ABI once at start-up and passes the version to
 * apply to every helper, so that all children of one server get the same
 * sandbox and a test can pretend a lower version. */

enum cap_sandbox_mode {
  CAP_SANDBOX_OFF,         /* Children are spawned directly, as before. */
  CAP_SANDBOX_BEST_EFFORT, /* Whatever the kernel offers; what is missing is logged. */
  CAP_SANDBOX_REQUIRED,    /* Refuse to start without Landlock file-system rules. */
};

/* The helper's own small binary, found beside cap-server's. */
#define CAP_SANDBOX_HELPER "cap-sandbox"

/* The highest Landlock ABI whose features cap-server knows. */
#define CAP_SANDBOX_ABI_KNOWN 7

/* The server's side: the mode, the ABI in force and the paths every child
 * may read. */
struct cap_sandbox {
  enum cap_sandbox_mode mode;
  int kernel_abi; /* What the kernel offers; 0 when Landlock is absent or disabled. */
  int abi;        /* What is applied: 0 when off or absent. */
  char **ro;      /* Read-only (and executable) paths for every child. */
  size_t nro;
  char **dev; /* GPU device nodes for hardware classes. */
  size_t ndev;
  char **hw_ro; /* What GPU drivers read besides (/sys, /proc/driver). */
  size_t nhw_ro;
  /* The helper to execute: the cap-sandbox binary, or NULL to re-execute
   * cap-server itself (/proc/self/exe --sandbox-exec). */
  char *helper;
};

/* Resource limits of one child; 0 leaves a limit unchanged. */
struct cap_sandbox_limits {
  int memory_mb;        /* RLIMIT_DATA: writable private memory. */
  int address_space_mb; /* RLIMIT_AS. */
  int cpu_s;            /* RLIMIT_CPU (SIGXCPU, then SIGKILL 5 s later). */
  int fsize_mb;         /* RLIMIT_FSIZE: the largest file it may write. */
  int nofile;           /* RLIMIT_NOFILE. */
  int nproc;            /* RLIMIT_NPROC (ignored by the kernel for root). */
  int nice;             /* 1..19: lower priority; 0 unchanged. */
  int ionice_class;     /* 2 best-effort, 3 idle; 0 unchanged. */
  int ionice_level;     /* 0..7 for best-effort. */
};

/* What one child may touch besides the common read-only paths. */
struct cap_sandbox_child {
  int in_fd;          /* The descriptor number (in the child) of its input file, or -1. */
  const char *rw_dir; /* The one directory it may write, or NULL. */
  int connect_port;   /* A loopback TCP port it may connect to, or 0. */
  int hardware;       /* GPU device nodes stay open to it. */
  struct cap_sandbox_limits lim;
};

/* Parses "off", "best-effort" or "required".  Returns 0 or -EINVAL. */
int cap_sandbox_parse_mode(const char *s, enum cap_sandbox_mode *out);
const char *cap_sandbox_mode_name(enum cap_sandbox_mode m);

/* Sets sb up: probes the kernel, caps the ABI at abi_max (0: no cap), and
 * collects the read-only paths (the defaults plus extra_ro, a
 * comma-separated list, may be NULL) and GPU device nodes.  Returns 0, or
 * -EINVAL (bad mode) / -ENOTSUP (required but the kernel has no Landlock)
 * with one line in err.  Free with cap_sandbox_free. */
int cap_sandbox_init(struct cap_sandbox *sb, const char *mode, int abi_max, const char *extra_ro,
                     char *err, size_t errlen);
void cap_sandbox_free(struct cap_sandbox *sb);
/* Returns 1 when children go through the helper. */
int cap_sandbox_active(const struct cap_sandbox *sb);
/* Appends {"mode":...,"landlock_abi":...,"kernel_landlock_abi":...,
 * "enforced":[...],"not_enforced":[...]} to out. */
void cap_sandbox_json(const struct cap_sandbox *sb, struct cap_buf *out);
/* Logs sandbox.ready with what is and is not enforced. */
void cap_sandbox_log_ready(const struct cap_sandbox *sb);

/* Builds the helper's argv for running args (NULL-terminated, args[0] the
 * program) under c: the program to spawn is the returned argv[0], the
 * server's own binary.  The caller owns the array and its strings and
 * frees them with cap_sandbox_argv_free. */
char **cap_sandbox_argv(const struct cap_sandbox *sb, const struct cap_sandbox_child *c,
                        char *const *args);
void cap_sandbox_argv_free(char **argv);

#endif
