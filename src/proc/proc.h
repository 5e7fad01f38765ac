#ifndef CAP_PROC_H
#define CAP_PROC_H

#include "buf.h"
#include "sandbox.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* How much of a child's stderr is kept: the last bytes, for error reports. */
#define CAP_PROC_ERR_RING 8192

/* A child process (ffmpeg or ffprobe) spawned without a shell in a process
 * group of its own, with stdin on /dev/null, stderr kept in a ring of its
 * last bytes, and optionally stdout captured and a progress pipe parsed. */
struct cap_proc {
  uv_process_t process;
  uv_pipe_t out, err, prog;
  int handles_open;
  int pid;
  int exited;
  int64_t exit_status;
  int term_signal;
  int spawn_error; /* A UV_E* code when the spawn itself failed. */
  char err_ring[CAP_PROC_ERR_RING];
  size_t err_total; /* Bytes ever written into the ring. */
  struct cap_buf out_buf;
  size_t out_max;
  int out_truncated;
  struct cap_buf prog_line;
  /* Called for each "key=value" line of the progress pipe. */
  void (*on_progress)(struct cap_proc *p, const char *key, const char *val);
  /* Called exactly once, after the child is reaped and every pipe closed
   * (or the spawn failed); p may be freed or reused from then on. */
  void (*on_done)(struct cap_proc *p);
  void *data;
};

struct cap_proc_spec {
  const char *file;   /* Looked up in PATH when it has no '/'. */
  char **args;        /* NULL-terminated argv, args[0] included. */
  int in_fd;          /* Becomes the child's fd 3 (e.g. the input file), or -1. */
  size_t capture_out; /* Keep up to this many bytes of stdout; 0 sends it to /dev/null. */
  int stream_out;     /* Make stdout a pipe the caller reads (p->out) and closes with
                         cap_proc_close_out. */
  int progress;       /* Open a pipe as the child's fd 4 for -progress pipe:4. */
  /* The sandbox to run the child in (through the helper), or NULL to
   * spawn it directly; child says what it may touch.  Both are read only
   * during cap_proc_spawn. */
  const struct cap_sandbox *sandbox;
  const struct cap_sandbox_child *child;
};

/* Spawns spec on loop.  Returns 0 or a UV_E* code; either way on_done will
 * be called exactly once later. */
int cap_proc_spawn(uv_loop_t *loop, struct cap_proc *p, const struct cap_proc_spec *spec);
/* Closes the stdout pipe of a stream_out child (after EOF, or to stop it). */
void cap_proc_close_out(struct cap_proc *p);
/* Sends signum to the child's whole process group.  Returns 0 or a UV_E* code. */
int cap_proc_signal(struct cap_proc *p, int signum);
/* Copies the last bytes of stderr (at most max-1) into out as a string. */
size_t cap_proc_stderr_tail(const struct cap_proc *p, char *out, size_t max);
/* Releases the captured output; call after on_done when done with it. */
void cap_proc_free(struct cap_proc *p);

/* Writes sig's name ("SIGKILL") to out, or its number when it has none.
 * Returns out. */
const char *cap_proc_signal_name(int sig, char *out, size_t n);
/* Writes how p ended to out: its exit status ("0", "1") or the signal that
 * killed it ("SIGKILL").  Returns -1 (out untouched) when it never ran. */
int cap_proc_exit_label(const struct cap_proc *p, char *out, size_t n);
/* Marks every open descriptor above stderr close-on-exec, so that children
 * inherit only what cap_proc_spawn hands them: for descriptors opened by
 * code that cannot be told to (inherited ones, libcurl's wake-up pair). */
void cap_proc_cloexec_all(void);

#endif
