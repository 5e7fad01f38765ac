#include "proc.h"

#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* This program re-runs itself as a child with a --child-* argument when a
 * test needs exact, known output (see child_main). */
static char self[4096];

struct run {
  struct cap_proc p;
  int done;
  /* Progress pairs as "key=value\n" lines. */
  char prog[16384];
  size_t prog_len;
  int prog_calls;
};

static void on_done(struct cap_proc *p) {
  struct run *r = p->data;
  r->done++;
}

static void on_progress(struct cap_proc *p, const char *key, const char *val) {
  struct run *r = p->data;
  r->prog_calls++;
  int n = snprintf(r->prog + r->prog_len, sizeof(r->prog) - r->prog_len, "%s=%s\n", key, val);
  if (n > 0 && r->prog_len + (size_t)n < sizeof(r->prog))
    r->prog_len += (size_t)n;
}

static void run_init(struct run *r) {
  memset(r, 0, sizeof(*r));
  r->p.data = r;
  r->p.on_done = on_done;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Spawns argv on a private loop, runs the loop until idle and checks that
 * no handle was left behind.  Returns the cap_proc_spawn result. */
static int run_once(struct run *r, char **argv, int in_fd, size_t capture, int progress) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) {
    CHECK(0);
    return -1;
  }
  struct cap_proc_spec spec = {
      .file = argv[0], .args = argv, .in_fd = in_fd, .capture_out = capture, .progress = progress};
  run_init(r);
  if (progress)
    r->p.on_progress = on_progress;
  int rc = cap_proc_spawn(&loop, &r->p, &spec);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (!CHECK_EQ_INT(r->done, 1))
    fprintf(stderr, "  on_done ran %d times for %s\n", r->done, argv[0]);
  if (!CHECK_EQ_INT(uv_loop_close(&loop), 0))
    fprintf(stderr, "  handles left open after %s\n", argv[0]);
  return rc;
}

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

/* 1 when pid is a live (not zombie) process. */
static int alive(int pid) {
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *paren = strrchr(buf, ')');
  return paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

static void test_exit_codes(void) {
  struct run r;
  char *t[] = {"/bin/true", NULL};
  CHECK_EQ_INT(run_once(&r, t, -1, 0, 0), 0);
  CHECK_EQ_INT(r.p.exited, 1);
  CHECK_EQ_INT(r.p.exit_status, 0);
  CHECK_EQ_INT(r.p.term_signal, 0);
  CHECK_EQ_INT(r.p.spawn_error, 0);
  CHECK(r.p.pid > 0);
  CHECK_EQ_INT(r.p.err_total, 0);
  cap_proc_free(&r.p);

  char *f[] = {"/bin/false", NULL};
  CHECK_EQ_INT(run_once(&r, f, -1, 0, 0), 0);
  CHECK_EQ_INT(r.p.exited, 1);
  CHECK_EQ_INT(r.p.exit_status, 1);
  CHECK_EQ_INT(r.p.term_signal, 0);
  cap_proc_free(&r.p);

  /* A name without '/' is looked up in PATH. */
  char *e[] = {"true", NULL};
  CHECK_EQ_INT(run_once(&r, e, -1, 0, 0), 0);
  CHECK_EQ_INT(r.p.exit_status, 0);
  CHECK_EQ_INT(r.p.spawn_error, 0);
  cap_proc_free(&r.p);

  char *x[] = {self, "--child-exit", "7", NULL};
  CHECK_EQ_INT(run_once(&r, x, -1, 0, 0), 0);
  CHECK_EQ_INT(r.p.exit_status, 7);
  char label[32] = "untouched";
  CHECK_EQ_INT(cap_proc_exit_label(&r.p, label, sizeof(label)), 0);
  CHECK_EQ_STR(label, "7");
  cap_proc_free(&r.p);
}

/* The names the metrics and the job JSON use for how a child ended. */
static void test_exit_labels(void) {
  char name[32];
  CHECK_EQ_STR(cap_proc_signal_name(SIGKILL, name, sizeof(name)), "SIGKILL");
  CHECK_EQ_STR(cap_proc_signal_name(SIGTERM, name, sizeof(name)), "SIGTERM");
  CHECK_EQ_STR(cap_proc_signal_name(1000, name, sizeof(name)), "1000");
  struct cap_proc p;
  memset(&p, 0, sizeof(p));
  p.term_signal = SIGSEGV;
  CHECK_EQ_INT(cap_proc_exit_label(&p, name, sizeof(name)), 0);
  CHECK_EQ_STR(name, "SIGSEGV");
  p.term_signal = 0;
  p.spawn_error = UV_ENOENT;
  snprintf(name, sizeof(name), "untouched");
  CHECK_EQ_INT(cap_proc_exit_label(&p, name, sizeof(name)), -1);
  CHECK_EQ_STR(name, "untouched");
}

static void test_spawn_error(void) {
  struct run r;
  char *m[] = {"/nonexistent/bin/cap-no-such-program", NULL};
  int rc = run_once(&r, m, -1, 0, 0);
  CHECK_EQ_INT(rc, UV_ENOENT);
  CHECK_EQ_INT(r.p.spawn_error, UV_ENOENT);
  CHECK_EQ_INT(r.p.exited, 0);
  CHECK_EQ_INT(r.p.pid, 0);
  CHECK_EQ_INT(cap_proc_signal(&r.p, SIGTERM), UV_ESRCH);
  char tail[64];
  CHECK_EQ_INT(cap_proc_stderr_tail(&r.p, tail, sizeof(tail)), 0);
  CHECK_EQ_STR(tail, "");
  cap_proc_free(&r.p);

  /* With every pipe asked for: still one on_done, nothing left open. */
  rc = run_once(&r, m, -1, 4096, 1);
  CHECK_EQ_INT(rc, UV_ENOENT);
  CHECK_EQ_INT(r.p.spawn_error, UV_ENOENT);
  CHECK_EQ_INT(r.p.out_buf.len, 0);
  CHECK_EQ_INT(r.prog_calls, 0);
  cap_proc_free(&r.p);

  /* Not in PATH. */
  char *q[] = {"cap-no-such-program-in-path", NULL};
  rc = run_once(&r, q, -1, 0, 0);
  CHECK_EQ_INT(rc, UV_ENOENT);
  CHECK_EQ_INT(r.p.spawn_error, UV_ENOENT);
  cap_proc_free(&r.p);

  /* Not executable. */
  char noexec[] = "/tmp/cap-test-proc-noexec-XXXXXX";
  int nfd = mkstemp(noexec);
  if (CHECK(nfd >= 0)) {
    close(nfd);
    chmod(noexec, 0644);
    char *n[] = {noexec, NULL};
    rc = run_once(&r, n, -1, 0, 0);
    CHECK_EQ_INT(rc, UV_EACCES);
    CHECK_EQ_INT(r.p.spawn_error, UV_EACCES);
    CHECK_EQ_INT(r.p.exited, 0);
    cap_proc_free(&r.p);
    unlink(noexec);
  }
}

static void test_capture(void) {
  struct run r;
  char *echo[] = {"/bin/echo", "hello", NULL};
  CHECK_EQ_INT(run_once(&r, echo, -1, 1024, 0), 0);
  CHECK_EQ_INT(r.p.exit_status, 0);
  CHECK_EQ_MEM(r.p.out_buf.data, r.p.out_buf.len, "hello\n", 6);
  CHECK_EQ_INT(r.p.out_truncated, 0);
  cap_proc_free(&r.p);

  /* Exactly as much room as output: not truncated. */
  CHECK_EQ_INT(run_once(&r, echo, -1, 6, 0), 0);
  CHECK_EQ_MEM(r.p.out_buf.data, r.p.out_buf.len, "hello\n", 6);
  CHECK_EQ_INT(r.p.out_truncated, 0);
  cap_proc_free(&r.p);

  /* Less room: the first bytes are kept and the truncation noted. */
  CHECK_EQ_INT(run_once(&r, echo, -1, 3, 0), 0);
  CHECK_EQ_MEM(r.p.out_buf.data, r.p.out_buf.len, "hel", 3);
  CHECK_EQ_INT(r.p.out_truncated, 1);
  CHECK_EQ_INT(r.p.exit_status, 0);
  cap_proc_free(&r.p);

  /* No capture: stdout goes nowhere. */
  CHECK_EQ_INT(run_once(&r, echo, -1, 0, 0), 0);
  CHECK_EQ_INT(r.p.out_buf.len, 0);
  CHECK_EQ_INT(r.p.out_truncated, 0);
  CHECK_EQ_INT(r.p.exit_status, 0);
  cap_proc_free(&r.p);

  /* Much more output than room: the child is drained to the end (does not
   * block on a full pipe) and exits normally. */
  char *big[] = {self, "--child-stdout", "1000000", NULL};
  double t0 = now_s();
  CHECK_EQ_INT(run_once(&r, big, -1, 1000, 0), 0);
  CHECK(now_s() - t0 < 8);
  CHECK_EQ_INT(r.p.exit_status, 0);
  CHECK_EQ_INT(r.p.term_signal, 0);
  CHECK_EQ_INT(r.p.out_buf.len, 1000);
  CHECK_EQ_INT(r.p.out_truncated, 1);
  if (r.p.out_buf.len == 1000) {
    int ok = 1;
    for (size_t i = 0; i < 1000; i++)
      if (r.p.out_buf.data[i] != (char)('a' + i % 26))
        ok = 0;
    CHECK(ok);
  }
  cap_proc_free(&r.p);

  /* All of a large output when there is room for it. */
  char *mid[] = {self, "--child-stdout", "300000", NULL};
  CHECK_EQ_INT(run_once(&r, mid, -1, 300000, 0), 0);
  CHECK_EQ_INT(r.p.out_buf.len, 300000);
  CHECK_EQ_INT(r.p.out_truncated, 0);
  if (r.p.out_buf.len == 300000)
    CHECK_EQ_INT(r.p.out_buf.data[299999], 'a' + 299999 % 26);
  cap_proc_free(&r.p);
}

static void test_stderr_tail(void) {
  struct run r;
  char tail[CAP_PROC_ERR_RING + 100];

  /* A little stderr: all of it. */
  char *ls[] = {"/bin/ls", "--nonexistent-flag", NULL};
  CHECK_EQ_INT(run_once(&r, ls, -1, 0, 0), 0);
  CHECK(r.p.exit_status != 0);
  CHECK(r.p.err_total > 0 && r.p.err_total < CAP_PROC_ERR_RING);
  size_t n = cap_proc_stderr_tail(&r.p, tail, sizeof(tail));
  CHECK_EQ_INT(n, r.p.err_total);
  CHECK_EQ_INT(strlen(tail), n);
  if (!CHECK(strstr(tail, "nonexistent-flag") != NULL))
    fprintf(stderr, "  tail: %s\n", tail);
  cap_proc_free(&r.p);

  /* 20000 known bytes: the ring keeps exactly the last 8 KiB. */
  char *gen[] = {self, "--child-stderr", "20000", NULL};
  CHECK_EQ_INT(run_once(&r, gen, -1, 0, 0), 0);
  CHECK_EQ_INT(r.p.exit_status, 0);
  CHECK_EQ_INT(r.p.err_total, 20000);
  static char want[20001];
  for (size_t i = 0; i < 20000; i++)
    want[i] = (char)((i % 64) == 63 ? '\n' : 'A' + (i * 7) % 26);
  n = cap_proc_stderr_tail(&r.p, tail, sizeof(tail));
  CHECK_EQ_INT(n, CAP_PROC_ERR_RING);
  CHECK_EQ_MEM(tail, n, want + 20000 - CAP_PROC_ERR_RING, CAP_PROC_ERR_RING);
  CHECK_EQ_INT(tail[n], '\0');
  /* A smaller buffer gets the very last bytes. */
  n = cap_proc_stderr_tail(&r.p, tail, 101);
  CHECK_EQ_INT(n, 100);
  CHECK_EQ_MEM(tail, n, want + 20000 - 100, 100);
  CHECK_EQ_INT(tail[100], '\0');
  /* Exactly the ring plus the NUL. */
  n = cap_proc_stderr_tail(&r.p, tail, CAP_PROC_ERR_RING + 1);
  CHECK_EQ_INT(n, CAP_PROC_ERR_RING);
  CHECK_EQ_MEM(tail, n, want + 20000 - CAP_PROC_ERR_RING, CAP_PROC_ERR_RING);
  /* Degenerate buffers. */
  tail[0] = 'X';
  CHECK_EQ_INT(cap_proc_stderr_tail(&r.p, tail, 1), 0);
  CHECK_EQ_INT(tail[0], '\0');
  tail[0] = 'X';
  CHECK_EQ_INT(cap_proc_stderr_tail(&r.p, tail, 0), 0);
  CHECK_EQ_INT(tail[0], 'X');
  cap_proc_free(&r.p);

  /* Exactly the ring size: all of it, in order. */
  char *ring[] = {self, "--child-stderr", "8192", NULL};
  CHECK_EQ_INT(run_once(&r, ring, -1, 0, 0), 0);
  CHECK_EQ_INT(r.p.err_total, 8192);
  n = cap_proc_stderr_tail(&r.p, tail, sizeof(tail));
  CHECK_EQ_INT(n, 8192);
  CHECK_EQ_MEM(tail, n, want, 8192);
  cap_proc_free(&r.p);

  /* A real chatty ffmpeg: more than a ring's worth, tail is its end. */
  char *ff[] = {"ffmpeg",  "-nostdin",  "-v", "debug", "-f",   "lavfi", "-i",
                "nullsrc", "-frames:v", "30", "-f",    "null", "-",     NULL};
  CHECK_EQ_INT(run_once(&r, ff, -1, 0, 0), 0);
  CHECK_EQ_INT(r.p.exit_status, 0);
  CHECK(r.p.err_total > 0);
  n = cap_proc_stderr_tail(&r.p, tail, sizeof(tail));
  CHECK_EQ_INT(n, r.p.err_total < CAP_PROC_ERR_RING ? r.p.err_total : CAP_PROC_ERR_RING);
  CHECK_EQ_INT(strlen(tail), n);
  cap_proc_free(&r.p);
}

static void test_signal(void) {
  uv_loop_t loop;
  struct run r;
  if (!CHECK_EQ_INT(uv_loop_init(&loop), 0))
    return;
  char *argv[] = {"/bin/sleep", "30", NULL};
  struct cap_proc_spec spec = {.file = argv[0], .args = argv, .in_fd = -1};
  run_init(&r);
  double t0 = now_s();
  CHECK_EQ_INT(cap_proc_spawn(&loop, &r.p, &spec), 0);
  CHECK(r.p.pid > 0);
  /* In a process group (and session) of its own. */
  CHECK_EQ_INT(getpgid(r.p.pid), r.p.pid);
  CHECK_EQ_INT(getsid(r.p.pid), r.p.pid);
  CHECK(getpgid(r.p.pid) != getpgrp());
  /* Let it run a moment; nothing ends by itself. */
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_EQ_INT(r.p.exited, 0);
  CHECK_EQ_INT(cap_proc_signal(&r.p, SIGTERM), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(now_s() - t0 < 5);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.p.exited, 1);
  CHECK_EQ_INT(r.p.term_signal, SIGTERM);
  /* Reaped: signalling again is refused rather than hitting a reused pid. */
  CHECK_EQ_INT(cap_proc_signal(&r.p, SIGTERM), UV_ESRCH);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  cap_proc_free(&r.p);

  /* The signal reaches the whole group: a grandchild holding stderr open
   * dies too, so the pipes close and on_done comes promptly. */
  if (!CHECK_EQ_INT(uv_loop_init(&loop), 0))
    return;
  char *fam[] = {self, "--child-family", NULL};
  spec.file = fam[0];
  spec.args = fam;
  run_init(&r);
  t0 = now_s();
  CHECK_EQ_INT(cap_proc_spawn(&loop, &r.p, &spec), 0);
  /* Wait until the grandchild has announced itself on stderr (one write
   * of "pid\n"). */
  char tail[64] = "";
  while (strchr(tail, '\n') == NULL && r.done == 0) {
    uv_run(&loop, UV_RUN_ONCE);
    cap_proc_stderr_tail(&r.p, tail, sizeof(tail));
  }
  int gpid = atoi(tail);
  CHECK(gpid > 0);
  if (gpid > 0)
    CHECK_EQ_INT(getpgid(gpid), r.p.pid);
  CHECK_EQ_INT(cap_proc_signal(&r.p, SIGKILL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(now_s() - t0 < 5);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.p.term_signal, SIGKILL);
  /* Its descriptors close a moment before it becomes a zombie: allow 2 s. */
  for (int i = 0; gpid > 0 && i < 200 && alive(gpid); i++)
    usleep(10000);
  if (gpid > 0)
    CHECK(!alive(gpid));
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  cap_proc_free(&r.p);
}

static void test_progress(void) {
  struct run r;
  char *argv[] = {"ffmpeg", "-nostdin",    "-hide_banner", "-progress", "pipe:4", "-f", "lavfi",
                  "-i",     "testsrc=d=1", "-f",           "null",      "-",      NULL};
  CHECK_EQ_INT(run_once(&r, argv, -1, 0, 1), 0);
  CHECK_EQ_INT(r.p.exit_status, 0);
  CHECK(r.prog_calls > 5);
  r.prog[r.prog_len] = '\0';
  if (!CHECK(strstr(r.prog, "progress=end\n") != NULL))
    fprintf(stderr, "  progress: %s\n", r.prog);
  /* progress=end is the very last pair. */
  CHECK(r.prog_len >= 13 && strcmp(r.prog + r.prog_len - 13, "progress=end\n") == 0);
  /* testsrc runs at 25 fps: one second is 25 frames. */
  CHECK(strstr(r.prog, "frame=25\n") != NULL);
  CHECK(strstr(r.prog, "out_time_us=") != NULL);
  /* Values keep everything after the first '='. */
  CHECK(strstr(r.prog, "\nframe=") != NULL || strncmp(r.prog, "frame=", 6) == 0);
  cap_proc_free(&r.p);

  /* Lines split across reads and odd lines, from a child we control. */
  char *odd[] = {self, "--child-progress", NULL};
  CHECK_EQ_INT(run_once(&r, odd, -1, 0, 1), 0);
  CHECK_EQ_INT(r.p.exit_status, 0);
  r.prog[r.prog_len] = '\0';
  CHECK_EQ_STR(r.prog, "a=1\nb=x=y\nempty=\n=noval\nprogress=end\n");
  cap_proc_free(&r.p);

  /* Without on_progress set the pipe is still drained. */
  char *argv2[] = {self, "--child-progress", NULL};
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  struct cap_proc_spec spec = {.file = self, .args = argv2, .in_fd = -1, .progress = 1};
  run_init(&r);
  CHECK_EQ_INT(cap_proc_spawn(&loop, &r.p, &spec), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.p.exit_status, 0);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  cap_proc_free(&r.p);
}

static void test_in_fd(void) {
  struct run r;
  char clip[] = "/tmp/cap-test-proc-XXXXXX.mkv";
  int tfd = mkstemps(clip, 4);
  if (!CHECK(tfd >= 0))
    return;
  close(tfd);
  char *gen[] = {
      "ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=d=2:s=64x64:r=10",
      "-c:v",   "mpeg4",    "-y", clip,    NULL};
  CHECK_EQ_INT(run_once(&r, gen, -1, 0, 0), 0);
  if (!CHECK_EQ_INT(r.p.exit_status, 0)) {
    char tail[512];
    cap_proc_stderr_tail(&r.p, tail, sizeof(tail));
    fprintf(stderr, "  ffmpeg: %s\n", tail);
  }
  cap_proc_free(&r.p);

  int fd = open(clip, O_RDONLY | O_CLOEXEC);
  if (!CHECK(fd >= 0)) {
    unlink(clip);
    return;
  }
  /* The child sees fd as its fd 3 even though it is close-on-exec here. */
  char *probe[] = {
      "ffprobe",        "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
      "file:/dev/fd/3", NULL};
  CHECK_EQ_INT(run_once(&r, probe, fd, 4096, 0), 0);
  if (!CHECK_EQ_INT(r.p.exit_status, 0)) {
    char tail[512];
    cap_proc_stderr_tail(&r.p, tail, sizeof(tail));
    fprintf(stderr, "  ffprobe: %s\n", tail);
  }
  double dur = r.p.out_buf.data ? strtod(r.p.out_buf.data, NULL) : -1;
  if (!CHECK(fabs(dur - 2.0) < 0.15))
    fprintf(stderr, "  duration %f (%s)\n", dur, r.p.out_buf.data ? r.p.out_buf.data : "");
  cap_proc_free(&r.p);

  /* The parent's fd is left open and usable. */
  CHECK(fcntl(fd, F_GETFD) >= 0);

  /* The exact bytes reach the child; stdin is /dev/null; no fd 3 or 4
   * unless asked for. */
  lseek(fd, 0, SEEK_SET);
  struct stat st;
  fstat(fd, &st);
  char *cat[] = {self, "--child-fds", NULL};
  CHECK_EQ_INT(run_once(&r, cat, fd, 1 << 20, 0), 0);
  CHECK_EQ_INT(r.p.exit_status, 0);
  char want[128];
  snprintf(want, sizeof(want), "stdin=devnull fd3=%lld fd4=closed\n", (long long)st.st_size);
  CHECK_EQ_STR(r.p.out_buf.data, want);
  cap_proc_free(&r.p);

  CHECK_EQ_INT(run_once(&r, cat, -1, 1 << 20, 1), 0);
  CHECK_EQ_STR(r.p.out_buf.data, "stdin=devnull fd3=closed fd4=open\n");
  cap_proc_free(&r.p);

  close(fd);
  unlink(clip);
}

/* ---- The child side ---- */

static int child_main(int argc, char **argv) {
  const char *mode = argv[1];
  if (strcmp(mode, "--child-exit") == 0 && argc > 2)
    return atoi(argv[2]);
  if (strcmp(mode, "--child-stdout") == 0 && argc > 2) {
    long n = atol(argv[2]);
    static char buf[4096];
    for (long i = 0; i < n;) {
      size_t k = 0;
      for (; k < sizeof(buf) && i < n; k++, i++)
        buf[k] = (char)('a' + i % 26);
      if (write(1, buf, k) != (ssize_t)k)
        return 3;
    }
    return 0;
  }
  if (strcmp(mode, "--child-stderr") == 0 && argc > 2) {
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) {
      char c = (char)((i % 64) == 63 ? '\n' : 'A' + (i * 7) % 26);
      /* Many small writes, so the reads split at odd places. */
      if (write(2, &c, 1) != 1)
        return 3;
    }
    return 0;
  }
  if (strcmp(mode, "--child-family") == 0) {
    pid_t pid = fork();
    if (pid == 0) {
      char msg[32];
      int len = snprintf(msg, sizeof(msg), "%d\n", (int)getpid());
      if (write(2, msg, (size_t)len) != len)
        _exit(3);
      for (;;)
        pause();
    }
    for (;;)
      pause();
  }
  if (strcmp(mode, "--child-progress") == 0) {
    const char *parts[] = {"a=1\nb=x",   "=y\r\n", "no equals sign\n",     "empty=\n=noval\n",
                           "progress=e", "nd\n",   "trailing=unterminated"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
      if (write(4, parts[i], strlen(parts[i])) < 0)
        return 3;
      usleep(20000);
    }
    return 0;
  }
  if (strcmp(mode, "--child-fds") == 0) {
    char buf[65536];
    struct stat st;
    const char *in = "other";
    if (fstat(0, &st) == 0 && S_ISCHR(st.st_mode) && read(0, buf, 1) == 0) {
      struct stat dn;
      if (stat("/dev/null", &dn) == 0 && dn.st_rdev == st.st_rdev)
        in = "devnull";
    }
    char fd3[32] = "closed";
    if (fcntl(3, F_GETFD) >= 0) {
      long long total = 0;
      ssize_t n;
      while ((n = read(3, buf, sizeof(buf))) > 0)
        total += n;
      snprintf(fd3, sizeof(fd3), "%lld", total);
    }
    const char *fd4 = fcntl(4, F_GETFD) >= 0 ? "open" : "closed";
    printf("stdin=%s fd3=%s fd4=%s\n", in, fd3, fd4);
    return 0;
  }
  return 100;
}

int main(int argc, char **argv) {
  if (argc > 1 && strncmp(argv[1], "--child-", 8) == 0)
    return child_main(argc, argv);
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    perror("readlink /proc/self/exe");
    return 1;
  }
  self[n] = '\0';
  alarm(60); /* A hung child must not hang the test run. */
  /* Descriptors this process inherited (ctest leaves some open) would be
   * inherited by the children too; the fd 3/4 checks need them closed. */
  for (int fd = 3; fd < 1024; fd++) {
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
      fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
  }
  test_exit_codes();
  test_exit_labels();
  /* The first spawn opened libuv's process-wide signal pipe; count from here. */
  int fds = count_fds();
  test_spawn_error();
  test_capture();
  test_stderr_tail();
  test_signal();
  test_progress();
  test_in_fd();
  /* Nothing leaked a descriptor. */
  CHECK_EQ_INT(count_fds(), fds);
  return check_report();
}
