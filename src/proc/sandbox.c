#include "sandbox.h"

#include "alloc.h"
#include "jsonw.h"
#include "log.h"

#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What every child may read: the dynamic loader's files, the libraries
 * and data under /usr, fontconfig's configuration and cache (drawtext),
 * the time zone, the CPU topology glibc and x264 read to size their thread
 * pools, and the kernel's randomness.  Missing paths are skipped. */
static const char *const default_ro[] = {"/usr",
                                         "/lib",
                                         "/lib64",
                                         "/lib32",
                                         "/libx32",
                                         "/bin",
                                         "/sbin",
                                         "/etc/ld.so.cache",
                                         "/etc/ld.so.conf",
                                         "/etc/ld.so.conf.d",
                                         "/etc/fonts",
                                         "/etc/localtime",
                                         "/var/cache/fontconfig",
                                         "/sys/devices/system/cpu",
                                         "/sys/devices/system/node",
                                         "/proc/cpuinfo",
                                         "/dev/urandom",
                                         "/dev/random",
                                         NULL};
/* What GPU drivers (CUDA/NVENC, VAAPI) read to find their devices. */
static const char *const hardware_ro[] = {"/sys", "/proc/driver", "/dev/dri", NULL};

static const char *const mode_names[] = {"off", "best-effort", "required"};

int cap_sandbox_parse_mode(const char *s, enum cap_sandbox_mode *out) {
  for (int i = 0; i < 3; i++)
    if (strcmp(s, mode_names[i]) == 0) {
      *out = (enum cap_sandbox_mode)i;
      return 0;
    }
  return -EINVAL;
}

const char *cap_sandbox_mode_name(enum cap_sandbox_mode m) {
  return mode_names[m];
}

static void push(char ***v, size_t *n, const char *s) {
  *v = xrealloc(*v, (*n + 2) * sizeof(char *));
  (*v)[(*n)++] = xstrdup(s);
  (*v)[*n] = NULL;
}

static void free_list(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

/* Adds each existing entry of a comma-separated list. */
static void push_csv(char ***v, size_t *n, const char *csv) {
  char *copy = xstrdup(csv), *save = NULL;
  for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
    if (*t)
      push(v, n, t);
  free(copy);
}

/* The cap-sandbox binary beside our own (the build tree, /usr/bin,
 * /usr/local/bin), or NULL when there is none. */
static char *find_helper(void) {
  char self[PATH_MAX], path[PATH_MAX + 32];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) {
      *slash = '\0';
      snprintf(path, sizeof(path), "%s/%s", self, CAP_SANDBOX_HELPER);
      if (access(path, X_OK) == 0)
        return xstrdup(path);
    }
  }
  return NULL;
}

int cap_sandbox_init(struct cap_sandbox *sb, const char *mode, int abi_max, const char *extra_ro,
                     char *err, size_t errlen) {
  memset(sb, 0, sizeof(*sb));
  if (cap_sandbox_parse_mode(mode ? mode : "best-effort", &sb->mode) != 0) {
    snprintf(err, errlen, "sandbox: must be off, best-effort or required, not '%s'", mode);
    return -EINVAL;
  }
  sb->kernel_abi = cap_sandbox_kernel_abi();
  sb->abi = sb->mode == CAP_SANDBOX_OFF ? 0 : sb->kernel_abi;
  if (abi_max > 0 && sb->abi > abi_max)
    sb->abi = abi_max;
  if (sb->abi > CAP_SANDBOX_ABI_KNOWN)
    sb->abi = CAP_SANDBOX_ABI_KNOWN;
  if (sb->mode == CAP_SANDBOX_REQUIRED && sb->abi < 1) {
    snprintf(
        err, errlen,
        "sandbox: required, but this kernel offers no Landlock (enable it with lsm=landlock,... "
        "on the kernel command line, or set sandbox to best-effort)");
    return -ENOTSUP;
  }
  for (size_t i = 0; default_ro[i]; i++)
    push(&sb->ro, &sb->nro, default_ro[i]);
  if (extra_ro)
    push_csv(&sb->ro, &sb->nro, extra_ro);
  for (size_t i = 0; hardware_ro[i]; i++)
    push(&sb->hw_ro, &sb->nhw_ro, hardware_ro[i]);
  glob_t g;
  if (glob("/dev/nvidia*", 0, NULL, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; i++)
      push(&sb->dev, &sb->ndev, g.gl_pathv[i]);
    globfree(&g);
  }
  push(&sb->dev, &sb->ndev, "/dev/dri");
  sb->helper = find_helper();
  return 0;
}

void cap_sandbox_free(struct cap_sandbox *sb) {
  free(sb->helper);
  free_list(sb->ro, sb->nro);
  free_list(sb->dev, sb->ndev);
  free_list(sb->hw_ro, sb->nhw_ro);
  memset(sb, 0, sizeof(*sb));
}

int cap_sandbox_active(const struct cap_sandbox *sb) {
  return sb != NULL && sb->mode != CAP_SANDBOX_OFF;
}

/* The layers, by the ABI each needs (0: the helper alone gives it). */
static const struct {
  const char *name;
  int abi;
} layers[] = {
    {"no_new_privs", 0}, {"pdeathsig", 0},          {"rlimits", 0},
    {"landlock_fs", 1},  {"landlock_refer", 2},     {"landlock_truncate", 3},
    {"landlock_tcp", 4}, {"landlock_ioctl_dev", 5}, {"landlock_scope", 6},
};

static int layer_on(const struct cap_sandbox *sb, size_t i) {
  return cap_sandbox_active(sb) && (layers[i].abi == 0 || sb->abi >= layers[i].abi);
}

static void layer_list(const struct cap_sandbox *sb, struct cap_buf *out, int on) {
  int first = 1;
  cap_buf_putc(out, '[');
  for (size_t i = 0; i < sizeof(layers) / sizeof(layers[0]); i++) {
    if (layer_on(sb, i) != on)
      continue;
    if (!first)
      cap_buf_putc(out, ',');
    first = 0;
    cap_jsonw_str(out, layers[i].name, strlen(layers[i].name));
  }
  cap_buf_putc(out, ']');
}

void cap_sandbox_json(const struct cap_sandbox *sb, struct cap_buf *out) {
  cap_buf_printf(out, "{\"mode\":\"%s\",\"landlock_abi\":%d,\"kernel_landlock_abi\":%d",
                 mode_names[sb->mode], sb->abi, sb->kernel_abi);
  cap_buf_printf(out, ",\"helper\":\"%s\"", sb->helper ? CAP_SANDBOX_HELPER : "self");
  cap_buf_puts(out, ",\"enforced\":");
  layer_list(sb, out, 1);
  cap_buf_puts(out, ",\"not_enforced\":");
  layer_list(sb, out, 0);
  cap_buf_putc(out, '}');
}

void cap_sandbox_log_ready(const struct cap_sandbox *sb) {
  struct cap_buf on, off;
  cap_buf_init(&on);
  cap_buf_init(&off);
  for (size_t i = 0; i < sizeof(layers) / sizeof(layers[0]); i++) {
    struct cap_buf *b = layer_on(sb, i) ? &on : &off;
    if (b->len)
      cap_buf_putc(b, ',');
    cap_buf_puts(b, layers[i].name);
  }
  int weak = sb->mode != CAP_SANDBOX_OFF && sb->abi < 6;
  struct cap_log_rec *r = cap_log_begin(
      sb->mode == CAP_SANDBOX_OFF || weak ? CAP_LOG_WARN : CAP_LOG_INFO, "sandbox.ready");
  cap_log_str(r, "mode", mode_names[sb->mode]);
  cap_log_int(r, "landlock_abi", sb->abi);
  cap_log_int(r, "kernel_landlock_abi", sb->kernel_abi);
  cap_log_str(r, "helper", sb->helper ? sb->helper : "/proc/self/exe --sandbox-exec");
  cap_log_str(r, "enforced", on.len ? on.data : "");
  cap_log_str(r, "not_enforced", off.len ? off.data : "");
  cap_log_end(r);
  cap_buf_free(&on);
  cap_buf_free(&off);
}

/* ---- The server's side: the helper's command line. ---- */

static void arg(char ***v, size_t *n, const char *s) {
  push(v, n, s);
}

static void arg_int(char ***v, size_t *n, const char *flag, long val) {
  char num[32];
  snprintf(num, sizeof(num), "%ld", val);
  push(v, n, flag);
  push(v, n, num);
}

static void limit_args(char ***v, size_t *n, const struct cap_sandbox_limits *l) {
  if (l->memory_mb > 0)
    arg_int(v, n, "--data-mb", l->memory_mb);
  if (l->address_space_mb > 0)
    arg_int(v, n, "--as-mb", l->address_space_mb);
  if (l->cpu_s > 0)
    arg_int(v, n, "--cpu-s", l->cpu_s);
  if (l->fsize_mb > 0)
    arg_int(v, n, "--fsize-mb", l->fsize_mb);
  if (l->nofile > 0)
    arg_int(v, n, "--nofile", l->nofile);
  if (l->nproc > 0)
    arg_int(v, n, "--nproc", l->nproc);
  if (l->nice > 0)
    arg_int(v, n, "--nice", l->nice);
  if (l->ionice_class > 0) {
    char io[16];
    snprintf(io, sizeof(io), "%d:%d", l->ionice_class, l->ionice_level);
    push(v, n, "--ionice");
    push(v, n, io);
  }
}

char **cap_sandbox_argv(const struct cap_sandbox *sb, const struct cap_sandbox_child *c,
                        char *const *args) {
  char **v = NULL;
  size_t n = 0;
  /* The small helper when it is installed; else the server's own binary,
   * as it was when it started (an upgrade that replaced the file on disk
   * does not change which helper runs). */
  if (sb->helper) {
    arg(&v, &n, sb->helper);
  } else {
    arg(&v, &n, "/proc/self/exe");
    arg(&v, &n, CAP_SANDBOX_FLAG);
  }
  arg_int(&v, &n, "--abi", sb->abi);
  arg_int(&v, &n, "--parent", (long)getpid());
  for (size_t i = 0; i < sb->nro; i++) {
    arg(&v, &n, "--ro");
    arg(&v, &n, sb->ro[i]);
  }
  if (c->hardware) {
    for (size_t i = 0; i < sb->nhw_ro; i++) {
      arg(&v, &n, "--ro");
      arg(&v, &n, sb->hw_ro[i]);
    }
    for (size_t i = 0; i < sb->ndev; i++) {
      arg(&v, &n, "--dev");
      arg(&v, &n, sb->dev[i]);
    }
    /* Recent NVIDIA drivers name their threads through
     * /proc/self/task/<tid>/comm: the child's own entries only. */
    arg(&v, &n, "--rw");
    arg(&v, &n, "/proc/self");
  }
  /* /dev/null is where ffmpeg's null muxer and probes may write. */
  arg(&v, &n, "--rw");
  arg(&v, &n, "/dev/null");
  if (c->in_fd >= 0)
    arg_int(&v, &n, "--ro-fd", c->in_fd);
  if (c->rw_dir) {
    arg(&v, &n, "--rw");
    arg(&v, &n, c->rw_dir);
  }
  if (c->connect_port > 0)
    arg_int(&v, &n, "--connect", c->connect_port);
  limit_args(&v, &n, &c->lim);
  arg(&v, &n, "--");
  for (size_t i = 0; args[i]; i++)
    arg(&v, &n, args[i]);
  return v;
}

void cap_sandbox_argv_free(char **argv) {
  for (size_t i = 0; argv && argv[i]; i++)
    free(argv[i]);
  free(argv);
}
