/* For sigabbrev_np. */
#define _GNU_SOURCE
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void on_closed(uv_handle_t *h) {
  struct cap_proc *p = h->data;
  if (--p->handles_open == 0 && p->on_done)
    p->on_done(p);
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, on_closed);
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int sig) {
  struct cap_proc *p = proc->data;
  p->exited = 1;
  p->exit_status = status;
  p->term_signal = sig;
  close_handle((uv_handle_t *)proc);
}

static char scratch[64 * 1024];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  *buf = uv_buf_init(scratch, sizeof(scratch));
}

static void on_err_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct cap_proc *p = s->data;
  if (n < 0) {
    close_handle((uv_handle_t *)s);
    return;
  }
  for (ssize_t i = 0; i < n; i++)
    p->err_ring[(p->err_total + (size_t)i) % CAP_PROC_ERR_RING] = buf->base[i];
  p->err_total += (size_t)n;
}

static void on_out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct cap_proc *p = s->data;
  if (n < 0) {
    close_handle((uv_handle_t *)s);
    return;
  }
  size_t room = p->out_max > p->out_buf.len ? p->out_max - p->out_buf.len : 0;
  size_t take = (size_t)n < room ? (size_t)n : room;
  if (take)
    cap_buf_append(&p->out_buf, buf->base, take);
  if (take < (size_t)n)
    p->out_truncated = 1; /* Keep reading so the child never blocks on us. */
}

static void progress_line(struct cap_proc *p, char *line) {
  char *eq = strchr(line, '=');
  if (eq == NULL || p->on_progress == NULL)
    return;
  *eq = '\0';
  p->on_progress(p, line, eq + 1);
}

static void on_prog_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct cap_proc *p = s->data;
  if (n < 0) {
    close_handle((uv_handle_t *)s);
    return;
  }
  for (ssize_t i = 0; i < n; i++) {
    char c = buf->base[i];
    if (c == '\n') {
      progress_line(p, p->prog_line.data ? p->prog_line.data : (char *)"");
      cap_buf_reset(&p->prog_line);
    } else if (c != '\r' && p->prog_line.len < 1024) {
      cap_buf_putc(&p->prog_line, c);
    }
  }
}

extern char **environ;

/* Children get only these variables: the server's environment holds
 * secrets (CAPABILITY_TOKEN, storage keys) that ffmpeg has no use for and
 * that /proc/<pid>/environ would show. */
static const char *const env_keep[] = {"PATH=",
                                       "HOME=",
                                       "LANG=",
                                       "LC_ALL=",
                                       "TZ=",
                                       "TMPDIR=",
                                       "LD_LIBRARY_PATH=",
                                       "CUDA_VISIBLE_DEVICES=",
                                       "NVIDIA_VISIBLE_DEVICES=",
                                       "NVIDIA_DRIVER_CAPABILITIES=",
                                       "LIBVA_DRIVER_NAME=",
                                       NULL};

static char **child_env(void) {
  static char *env[16];
  static int ready;
  if (!ready) {
    size_t n = 0;
    for (char **e = environ; e && *e && n + 1 < sizeof(env) / sizeof(env[0]); e++)
      for (size_t k = 0; env_keep[k]; k++)
        if (strncmp(*e, env_keep[k], strlen(env_keep[k])) == 0) {
          env[n++] = *e;
          break;
        }
    env[n] = NULL;
    ready = 1;
  }
  return env;
}

/* Fills the child's five descriptors: stdin and stdout ignored unless
 * captured or streamed, stderr always a pipe, fd 3 the input (if any) and
 * fd 4 the progress pipe.  Each pipe opened counts in handles_open. */
static void setup_stdio(uv_loop_t *loop, struct cap_proc *p, const struct cap_proc_spec *spec,
                        uv_stdio_container_t stdio[5]) {
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_IGNORE;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  uv_pipe_init(loop, &p->err, 0);
  p->err.data = p;
  p->handles_open++;
  stdio[2].data.stream = (uv_stream_t *)&p->err;
  if (spec->capture_out || spec->stream_out) {
    uv_pipe_init(loop, &p->out, 0);
    p->out.data = p;
    p->handles_open++;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&p->out;
  }
  stdio[3].flags = UV_IGNORE;
  if (spec->in_fd >= 0) {
    stdio[3].flags = UV_INHERIT_FD;
    stdio[3].data.fd = spec->in_fd;
  }
  stdio[4].flags = UV_IGNORE;
  if (spec->progress) {
    uv_pipe_init(loop, &p->prog, 0);
    p->prog.data = p;
    p->handles_open++;
    stdio[4].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[4].data.stream = (uv_stream_t *)&p->prog;
  }
}

int cap_proc_spawn(uv_loop_t *loop, struct cap_proc *p, const struct cap_proc_spec *spec) {
  uv_stdio_container_t stdio[5];
  uv_process_options_t opts;
  int rc;

  memset(&opts, 0, sizeof(opts));
  memset(stdio, 0, sizeof(stdio));
  p->handles_open = 1;
  p->pid = 0;
  p->exited = 0;
  p->exit_status = -1;
  p->term_signal = 0;
  p->spawn_error = 0;
  p->err_total = 0;
  p->out_max = spec->capture_out;
  p->out_truncated = 0;
  cap_buf_init(&p->out_buf);
  cap_buf_init(&p->prog_line);
  p->process.data = p;

  setup_stdio(loop, p, spec, stdio);

  /* Under the sandbox the child is our own binary in its helper mode,
   * which confines itself and then executes spec->args unchanged. */
  char **wrapped = NULL;
  if (cap_sandbox_active(spec->sandbox) && spec->child)
    wrapped = cap_sandbox_argv(spec->sandbox, spec->child, spec->args);
  opts.file = wrapped ? wrapped[0] : spec->file;
  opts.args = wrapped ? wrapped : spec->args;
  opts.env = child_env();
  opts.exit_cb = on_exit_cb;
  opts.stdio = stdio;
  opts.stdio_count = 5;
  /* Detached: the child calls setsid(), so its pid is its process group
   * and a signal to -pid reaches everything it started. */
  opts.flags = UV_PROCESS_DETACHED;

  /* uv_spawn returns once the child has executed (or failed to), so the
   * wrapped argv is no longer needed afterwards. */
  rc = uv_spawn(loop, &p->process, &opts);
  cap_sandbox_argv_free(wrapped);
  if (rc != 0) {
    p->spawn_error = rc;
    close_handle((uv_handle_t *)&p->process);
    close_handle((uv_handle_t *)&p->err);
    if (spec->capture_out || spec->stream_out)
      close_handle((uv_handle_t *)&p->out);
    if (spec->progress)
      close_handle((uv_handle_t *)&p->prog);
    return rc;
  }
  p->pid = p->process.pid;
  uv_read_start((uv_stream_t *)&p->err, on_alloc, on_err_read);
  if (spec->capture_out)
    uv_read_start((uv_stream_t *)&p->out, on_alloc, on_out_read);
  if (spec->progress)
    uv_read_start((uv_stream_t *)&p->prog, on_alloc, on_prog_read);
  return 0;
}

void cap_proc_close_out(struct cap_proc *p) {
  close_handle((uv_handle_t *)&p->out);
}

int cap_proc_signal(struct cap_proc *p, int signum) {
  if (p->pid <= 0 || p->exited)
    return UV_ESRCH;
  if (kill(-p->pid, signum) != 0)
    return -errno;
  return 0;
}

size_t cap_proc_stderr_tail(const struct cap_proc *p, char *out, size_t max) {
  if (max == 0)
    return 0;
  size_t have = p->err_total < CAP_PROC_ERR_RING ? p->err_total : CAP_PROC_ERR_RING;
  size_t n = have < max - 1 ? have : max - 1;
  size_t start = p->err_total - n;
  for (size_t i = 0; i < n; i++)
    out[i] = p->err_ring[(start + i) % CAP_PROC_ERR_RING];
  out[n] = '\0';
  return n;
}

void cap_proc_free(struct cap_proc *p) {
  cap_buf_free(&p->out_buf);
  cap_buf_free(&p->prog_line);
}

void cap_proc_cloexec_all(void) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  if (d == NULL)
    return;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (*end != '\0' || fd <= 2 || fd == dirfd(d))
      continue;
    int flags = fcntl((int)fd, F_GETFD);
    if (flags >= 0)
      fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
  }
  closedir(d);
}

const char *cap_proc_signal_name(int sig, char *out, size_t n) {
  const char *abbrev = sigabbrev_np(sig);
  if (abbrev)
    snprintf(out, n, "SIG%s", abbrev);
  else
    snprintf(out, n, "%d", sig);
  return out;
}

int cap_proc_exit_label(const struct cap_proc *p, char *out, size_t n) {
  if (p->spawn_error)
    return -1;
  if (p->term_signal)
    cap_proc_signal_name(p->term_signal, out, n);
  else
    snprintf(out, n, "%lld", (long long)p->exit_status);
  return 0;
}
