/* The server's side of the sandbox (modes, the helper's command line, the
 * health JSON) and, through fork, the helper itself on the running
 * kernel.  test_sandbox.py covers the helper against real programs. */
#include "sandbox.h"

#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int argv_has(char **v, const char *a, const char *b) {
  for (size_t i = 0; v[i]; i++)
    if (strcmp(v[i], a) == 0 && (b == NULL || (v[i + 1] && strcmp(v[i + 1], b) == 0)))
      return 1;
  return 0;
}

/* The index of "--" in v, or -1. */
static int dashdash(char **v) {
  for (int i = 0; v[i]; i++)
    if (strcmp(v[i], "--") == 0)
      return i;
  return -1;
}

static void test_modes(void) {
  enum cap_sandbox_mode m;
  CHECK_EQ_INT(cap_sandbox_parse_mode("off", &m), 0);
  CHECK_EQ_INT(m, CAP_SANDBOX_OFF);
  CHECK_EQ_INT(cap_sandbox_parse_mode("best-effort", &m), 0);
  CHECK_EQ_INT(m, CAP_SANDBOX_BEST_EFFORT);
  CHECK_EQ_INT(cap_sandbox_parse_mode("required", &m), 0);
  CHECK_EQ_INT(m, CAP_SANDBOX_REQUIRED);
  CHECK_EQ_INT(cap_sandbox_parse_mode("on", &m), -EINVAL);
  CHECK_EQ_INT(cap_sandbox_parse_mode("", &m), -EINVAL);
  CHECK_EQ_STR(cap_sandbox_mode_name(CAP_SANDBOX_BEST_EFFORT), "best-effort");

  struct cap_sandbox sb;
  char err[300];
  CHECK_EQ_INT(cap_sandbox_init(&sb, "sometimes", 0, NULL, err, sizeof(err)), -EINVAL);
  CHECK(strstr(err, "sandbox") != NULL);
  cap_sandbox_free(&sb);

  /* off: nothing is applied, whatever the kernel offers. */
  CHECK_EQ_INT(cap_sandbox_init(&sb, "off", 0, NULL, err, sizeof(err)), 0);
  CHECK_EQ_INT(sb.abi, 0);
  CHECK(!cap_sandbox_active(&sb));
  CHECK(!cap_sandbox_active(NULL));
  cap_sandbox_free(&sb);

  /* The ABI is capped, never raised above the kernel's. */
  int kernel = cap_sandbox_kernel_abi();
  CHECK_EQ_INT(cap_sandbox_init(&sb, "best-effort", 2, NULL, err, sizeof(err)), 0);
  CHECK_EQ_INT(sb.kernel_abi, kernel);
  CHECK_EQ_INT(sb.abi, kernel < 2 ? kernel : 2);
  CHECK(cap_sandbox_active(&sb));
  cap_sandbox_free(&sb);
  CHECK_EQ_INT(cap_sandbox_init(&sb, "required", 0, NULL, err, sizeof(err)),
               kernel > 0 ? 0 : -ENOTSUP);
  cap_sandbox_free(&sb);
}

static void test_argv(void) {
  struct cap_sandbox sb;
  char err[300];
  if (!CHECK_EQ_INT(cap_sandbox_init(&sb, "best-effort", 3, "/opt/ff,/srv/fonts", err, sizeof(err)),
                    0))
    return;
  char *args[] = {"ffmpeg", "-i", "file:/dev/fd/3", "--", "-y", NULL};
  struct cap_sandbox_child c = {.in_fd = 3,
                                .rw_dir = "/data/.cap-tmp/JOB",
                                .lim = {.memory_mb = 512,
                                        .cpu_s = 70,
                                        .fsize_mb = 100,
                                        .nofile = 64,
                                        .nproc = 9,
                                        .nice = 10,
                                        .ionice_class = 2,
                                        .ionice_level = 7}};
  char **v = cap_sandbox_argv(&sb, &c, args);
  /* The helper: cap-sandbox beside the binary, or cap-server itself. */
  if (sb.helper)
    CHECK_EQ_STR(v[0], sb.helper);
  else
    CHECK(strcmp(v[0], "/proc/self/exe") == 0 && strcmp(v[1], CAP_SANDBOX_FLAG) == 0);
  char abi[8], pid[16];
  snprintf(abi, sizeof(abi), "%d", sb.abi);
  snprintf(pid, sizeof(pid), "%d", (int)getpid());
  CHECK(argv_has(v, "--abi", abi));
  CHECK(argv_has(v, "--parent", pid));
  CHECK(argv_has(v, "--ro", "/usr"));
  CHECK(argv_has(v, "--ro", "/opt/ff"));
  CHECK(argv_has(v, "--ro", "/srv/fonts"));
  CHECK(argv_has(v, "--ro-fd", "3"));
  CHECK(argv_has(v, "--rw", "/data/.cap-tmp/JOB"));
  CHECK(argv_has(v, "--data-mb", "512"));
  CHECK(!argv_has(v, "--as-mb", NULL));
  CHECK(argv_has(v, "--cpu-s", "70"));
  CHECK(argv_has(v, "--fsize-mb", "100"));
  CHECK(argv_has(v, "--nofile", "64"));
  CHECK(argv_has(v, "--nproc", "9"));
  CHECK(argv_has(v, "--nice", "10"));
  CHECK(argv_has(v, "--ionice", "2:7"));
  /* No device nodes for a cpu child, no port when none is given. */
  CHECK(!argv_has(v, "--dev", NULL));
  CHECK(!argv_has(v, "--connect", NULL));
  /* The program's argv follows the first "--", unchanged, its own "--"
   * included. */
  int dd = dashdash(v);
  if (CHECK(dd > 0)) {
    for (int i = 0; args[i]; i++)
      CHECK_EQ_STR(v[dd + 1 + i], args[i]);
    CHECK(v[dd + 6] == NULL);
  }
  cap_sandbox_argv_free(v);

  /* A hardware child gets the GPU nodes and what its driver reads; a
   * child without input or output gets neither rule. */
  struct cap_sandbox_child hw = {.in_fd = -1, .hardware = 1, .connect_port = 4321};
  v = cap_sandbox_argv(&sb, &hw, args);
  CHECK(argv_has(v, "--dev", "/dev/dri"));
  CHECK(argv_has(v, "--ro", "/sys"));
  CHECK(!argv_has(v, "--ro-fd", NULL));
  CHECK(argv_has(v, "--connect", "4321"));
  CHECK(!argv_has(v, "--nice", NULL));
  CHECK(argv_has(v, "--rw", "/dev/null"));
  CHECK(!argv_has(v, "--rw", "/data/.cap-tmp/JOB"));
  cap_sandbox_argv_free(v);
  cap_sandbox_free(&sb);
}

static void test_json(void) {
  struct cap_sandbox sb;
  struct cap_buf b;
  char err[300];
  cap_buf_init(&b);
  CHECK_EQ_INT(cap_sandbox_init(&sb, "off", 0, NULL, err, sizeof(err)), 0);
  cap_sandbox_json(&sb, &b);
  cap_buf_putc(&b, '\0');
  CHECK(strstr(b.data, "\"mode\":\"off\",\"landlock_abi\":0") != NULL);
  CHECK(strstr(b.data, "\"enforced\":[]") != NULL);
  CHECK(strstr(b.data, "\"not_enforced\":[\"no_new_privs\"") != NULL);
  cap_sandbox_free(&sb);
  cap_buf_reset(&b);
  if (cap_sandbox_kernel_abi() >= 4) {
    CHECK_EQ_INT(cap_sandbox_init(&sb, "best-effort", 4, NULL, err, sizeof(err)), 0);
    cap_sandbox_json(&sb, &b);
    cap_buf_putc(&b, '\0');
    CHECK(strstr(b.data, "\"landlock_abi\":4") != NULL);
    CHECK(strstr(b.data, "\"landlock_tcp\"],\"not_enforced\":[\"landlock_ioctl_dev\","
                         "\"landlock_scope\"]") != NULL);
    cap_sandbox_free(&sb);
  }
  cap_buf_free(&b);
}

/* Runs the helper in a child: argv as given, stdout/stderr to /dev/null.
 * Returns the exit status, or 1000 + signal. */
static int run_helper(char **argv) {
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    int argc = 0;
    while (argv[argc])
      argc++;
    _exit(cap_sandbox_exec_main(argc, argv));
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
}

/* Runs cat /etc/hostname under Landlock ABI 1 with the loader's paths
 * and extra (NULL: none) readable; returns run_helper's result. */
static int cat_hostname(const char *extra) {
  const char *base[] = {"/usr", "/lib", "/lib64", "/etc/ld.so.cache", extra};
  char *argv[20];
  int n = 0;
  argv[n++] = "h";
  argv[n++] = "--abi";
  argv[n++] = "1";
  for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
    if (base[i]) {
      argv[n++] = "--ro";
      argv[n++] = (char *)base[i];
    }
  argv[n++] = "--";
  argv[n++] = "cat";
  argv[n++] = "/etc/hostname";
  argv[n] = NULL;
  return run_helper(argv);
}

static void test_helper(void) {
  /* Bad command lines stop before anything runs. */
  char *no_abi[] = {"h", "--", "/bin/true", NULL};
  CHECK_EQ_INT(run_helper(no_abi), 126);
  char *no_prog[] = {"h", "--abi", "0", "--", NULL};
  CHECK_EQ_INT(run_helper(no_prog), 126);
  char *bad[] = {"h", "--abi", "0", "--nice", "x", "--", "/bin/true", NULL};
  CHECK_EQ_INT(run_helper(bad), 126);
  char *unknown[] = {"h", "--abi", "0", "--frobnicate", "1", "--", "/bin/true", NULL};
  CHECK_EQ_INT(run_helper(unknown), 126);
  char *ionice[] = {"h", "--abi", "0", "--ionice", "2:9", "--", "/bin/true", NULL};
  CHECK_EQ_INT(run_helper(ionice), 126);
  char *missing[] = {"h", "--abi", "0", "--", "/nonexistent/prog", NULL};
  CHECK_EQ_INT(run_helper(missing), 127);
  char *wrong_parent[] = {"h", "--abi", "0", "--parent", "1", "--", "/bin/true", NULL};
  CHECK_EQ_INT(run_helper(wrong_parent), 126);
  /* Runs the program, found along PATH, with its exit status. */
  char *ok[] = {"h", "--abi", "0", "--nice", "5", "--", "true", NULL};
  CHECK_EQ_INT(run_helper(ok), 0);
  char *fails[] = {"h", "--abi", "0", "--", "false", NULL};
  CHECK_EQ_INT(run_helper(fails), 1);
  if (cap_sandbox_kernel_abi() < 1) {
    fprintf(stderr, "test-sandbox: no Landlock on this kernel; skipping its checks\n");
    return;
  }
  /* With Landlock, cat may read what --ro allows and nothing else. */
  CHECK_EQ_INT(cat_hostname("/etc/hostname"), 0);
  CHECK_EQ_INT(cat_hostname(NULL), 1);
}

int main(void) {
  test_modes();
  test_argv();
  test_json();
  test_helper();
  return check_report();
}
