#include "store.h"

#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char base[64];     /* mkdtemp directory holding everything. */
static char root[128];    /* The store's root (created by cap_store_open). */
static char outside[128]; /* A directory outside the root. */

static void path_in(char *out, size_t n, const char *dir, const char *rel) {
  int len = snprintf(out, n, "%s/%s", dir, rel);
  if (len < 0 || (size_t)len >= n)
    abort(); /* The test's own buffers are too small. */
}

static int write_file(const char *path, const char *content) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  size_t n = strlen(content);
  ssize_t w = write(fd, content, n);
  close(fd);
  return w == (ssize_t)n ? 0 : -EIO;
}

/* Reads up to n-1 bytes of path into out; returns the length or -errno. */
static long read_file(const char *path, char *out, size_t n) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  ssize_t r = read(fd, out, n - 1);
  close(fd);
  if (r < 0)
    return -EIO;
  out[r] = '\0';
  return (long)r;
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static void rm_rf(const char *path) {
  char *argv[] = {"rm", "-rf", (char *)path, NULL};
  pid_t pid = fork();
  if (pid == 0) {
    execv("/bin/rm", argv);
    _exit(127);
  }
  int st;
  if (pid > 0)
    waitpid(pid, &st, 0);
}

static void test_open(void) {
  struct cap_store s;
  char err[256] = "";
  char p[256];
  /* The root (two levels) does not exist yet. */
  int rc = cap_store_open(&s, root, err, sizeof(err));
  if (!CHECK_EQ_INT(rc, 0)) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  struct stat st;
  CHECK(stat(root, &st) == 0 && S_ISDIR(st.st_mode));
  path_in(p, sizeof(p), root, CAP_STORE_TMP_DIR);
  if (CHECK(lstat(p, &st) == 0)) {
    CHECK(S_ISDIR(st.st_mode));
    CHECK_EQ_INT(st.st_mode & 07777, 0700);
  }
  CHECK(s.root_fd >= 0);
  CHECK(s.tmp_fd >= 0);
  /* The root is kept as an absolute path without symlinks. */
  char *real = realpath(root, NULL);
  CHECK_EQ_STR(s.root, real);
  free(real);

  /* Leftovers in the temp directory are removed on the next open. */
  path_in(p, sizeof(p), root, CAP_STORE_TMP_DIR "/job1.mp4");
  CHECK_EQ_INT(write_file(p, "half an object"), 0);
  path_in(p, sizeof(p), root, CAP_STORE_TMP_DIR "/job2.m4a");
  CHECK_EQ_INT(write_file(p, "another"), 0);
  path_in(p, sizeof(p), root, "kept.txt");
  CHECK_EQ_INT(write_file(p, "an object"), 0);
  cap_store_close(&s);
  CHECK(s.root == NULL);
  CHECK_EQ_INT(s.root_fd, -1);
  CHECK_EQ_INT(s.tmp_fd, -1);

  rc = cap_store_open(&s, root, err, sizeof(err));
  if (!CHECK_EQ_INT(rc, 0))
    return;
  path_in(p, sizeof(p), root, CAP_STORE_TMP_DIR "/job1.mp4");
  CHECK(!exists(p));
  path_in(p, sizeof(p), root, CAP_STORE_TMP_DIR "/job2.m4a");
  CHECK(!exists(p));
  /* Objects are not touched. */
  path_in(p, sizeof(p), root, "kept.txt");
  CHECK(exists(p));
  cap_store_close(&s);

  /* A root that cannot be created: an error with the path in it. */
  char bad[256];
  path_in(bad, sizeof(bad), root, "kept.txt/sub");
  err[0] = '\0';
  rc = cap_store_open(&s, bad, err, sizeof(err));
  CHECK(rc < 0);
  CHECK(strstr(err, bad) != NULL);
  CHECK_EQ_INT(s.root_fd, -1);
  CHECK_EQ_INT(s.tmp_fd, -1);

  /* A temp directory that is a symlink is refused, not followed. */
  char linkroot[256];
  path_in(linkroot, sizeof(linkroot), base, "linkroot");
  CHECK_EQ_INT(mkdir(linkroot, 0755), 0);
  path_in(p, sizeof(p), linkroot, CAP_STORE_TMP_DIR);
  CHECK_EQ_INT(symlink(outside, p), 0);
  char victim[256];
  path_in(victim, sizeof(victim), outside, "victim");
  CHECK_EQ_INT(write_file(victim, "do not delete"), 0);
  rc = cap_store_open(&s, linkroot, err, sizeof(err));
  CHECK(rc < 0);
  if (rc == 0)
    cap_store_close(&s);
  CHECK(exists(victim));
  unlink(victim);
}

static void test_key_usable(void) {
  CHECK_EQ_INT(cap_store_key_usable("a.mp4"), 1);
  CHECK_EQ_INT(cap_store_key_usable("a/b/c.mp4"), 1);
  CHECK_EQ_INT(cap_store_key_usable(CAP_STORE_TMP_DIR), 0);
  CHECK_EQ_INT(cap_store_key_usable(CAP_STORE_TMP_DIR "/x.mp4"), 0);
  CHECK_EQ_INT(cap_store_key_usable(CAP_STORE_TMP_DIR "/a/b"), 0);
  /* The journal's directory is out of reach too. */
  CHECK_EQ_INT(cap_store_key_usable(CAP_STORE_STATE_DIR), 0);
  CHECK_EQ_INT(cap_store_key_usable(CAP_STORE_STATE_DIR "/journal.db"), 0);
  CHECK_EQ_INT(cap_store_key_usable(".cap-statex/journal.db"), 1);
  /* Only the top-level temp directory is special. */
  CHECK_EQ_INT(cap_store_key_usable(CAP_STORE_TMP_DIR "x/y"), 1);
  CHECK_EQ_INT(cap_store_key_usable(CAP_STORE_TMP_DIR "2"), 1);
  CHECK_EQ_INT(cap_store_key_usable("a/" CAP_STORE_TMP_DIR "/y"), 1);

  char key[1200];
  memset(key, 'a', 255);
  key[255] = '\0';
  CHECK_EQ_INT(cap_store_key_usable(key), 1);
  memset(key, 'a', 256);
  key[256] = '\0';
  CHECK_EQ_INT(cap_store_key_usable(key), 0);
  /* 255 in the middle and at the end, 256 in the middle. */
  memset(key, 0, sizeof(key));
  strcpy(key, "d/");
  memset(key + 2, 'a', 255);
  strcpy(key + 257, "/e");
  CHECK_EQ_INT(strlen(key), 2 + 255 + 2);
  CHECK_EQ_INT(cap_store_key_usable(key), 1);
  memset(key, 0, sizeof(key));
  strcpy(key, "d/");
  memset(key + 2, 'b', 256);
  strcpy(key + 258, "/e");
  CHECK_EQ_INT(cap_store_key_usable(key), 0);
  memset(key, 0, sizeof(key));
  strcpy(key, "d/e/");
  memset(key + 4, 'c', 256);
  CHECK_EQ_INT(cap_store_key_usable(key), 0);
  key[4 + 255] = '\0';
  CHECK_EQ_INT(cap_store_key_usable(key), 1);
  /* Many short segments are fine however long the key. */
  memset(key, 0, sizeof(key));
  for (int i = 0; i < 500; i++)
    strcat(key, "x/");
  strcat(key, "f");
  CHECK_EQ_INT(cap_store_key_usable(key), 1);
}

static void test_open_input(void) {
  struct cap_store s;
  char err[256];
  char p[512], q[512];
  if (!CHECK_EQ_INT(cap_store_open(&s, root, err, sizeof(err)), 0))
    return;

  /* A plain object, top-level and nested. */
  path_in(p, sizeof(p), root, "in.bin");
  CHECK_EQ_INT(write_file(p, "hello object"), 0);
  path_in(p, sizeof(p), root, "dir");
  mkdir(p, 0755);
  path_in(p, sizeof(p), root, "dir/sub");
  mkdir(p, 0755);
  path_in(p, sizeof(p), root, "dir/sub/nested.txt");
  CHECK_EQ_INT(write_file(p, "nested!"), 0);

  int fd = -1;
  uint64_t size = 0;
  CHECK_EQ_INT(cap_store_open_input(&s, "in.bin", &fd, &size), 0);
  CHECK_EQ_INT(size, 12);
  if (CHECK(fd >= 0)) {
    char buf[64];
    ssize_t r = read(fd, buf, sizeof(buf));
    CHECK_EQ_MEM(buf, r, "hello object", 12);
    /* Blocking again (the O_NONBLOCK used to open is cleared) and close-on-exec. */
    CHECK_EQ_INT(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
  }
  fd = -1;
  CHECK_EQ_INT(cap_store_open_input(&s, "dir/sub/nested.txt", &fd, &size), 0);
  CHECK_EQ_INT(size, 7);
  if (fd >= 0)
    close(fd);

  /* An empty file is an object of size 0. */
  path_in(p, sizeof(p), root, "empty");
  CHECK_EQ_INT(write_file(p, ""), 0);
  size = 99;
  fd = -1;
  CHECK_EQ_INT(cap_store_open_input(&s, "empty", &fd, &size), 0);
  CHECK_EQ_INT(size, 0);
  if (fd >= 0)
    close(fd);

  /* Missing: the object, a directory on the way. */
  fd = -7;
  CHECK_EQ_INT(cap_store_open_input(&s, "missing.bin", &fd, &size), -ENOENT);
  CHECK_EQ_INT(fd, -7);
  CHECK_EQ_INT(cap_store_open_input(&s, "nodir/x.bin", &fd, &size), -ENOENT);
  CHECK_EQ_INT(cap_store_open_input(&s, "dir/nosub/nested.txt", &fd, &size), -ENOENT);
  /* A file used as a directory, and a directory as an object. */
  CHECK_EQ_INT(cap_store_open_input(&s, "in.bin/x", &fd, &size), -ENOENT);
  CHECK_EQ_INT(cap_store_open_input(&s, "dir", &fd, &size), -ENOENT);
  CHECK_EQ_INT(cap_store_open_input(&s, "dir/sub", &fd, &size), -ENOENT);

  /* Symlinks: at the final component, inside and outside the root. */
  path_in(q, sizeof(q), outside, "secret.txt");
  CHECK_EQ_INT(write_file(q, "secret"), 0);
  path_in(p, sizeof(p), root, "link-out");
  CHECK_EQ_INT(symlink(q, p), 0);
  path_in(p, sizeof(p), root, "link-in");
  CHECK_EQ_INT(symlink("in.bin", p), 0);
  CHECK_EQ_INT(cap_store_open_input(&s, "link-out", &fd, &size), -ENOENT);
  CHECK_EQ_INT(cap_store_open_input(&s, "link-in", &fd, &size), -ENOENT);
  /* ...and at a directory component, inside and outside. */
  path_in(p, sizeof(p), root, "dirlink-out");
  CHECK_EQ_INT(symlink(outside, p), 0);
  path_in(p, sizeof(p), root, "dirlink-in");
  CHECK_EQ_INT(symlink("dir", p), 0);
  CHECK_EQ_INT(cap_store_open_input(&s, "dirlink-out/secret.txt", &fd, &size), -ENOENT);
  CHECK_EQ_INT(cap_store_open_input(&s, "dirlink-in/sub/nested.txt", &fd, &size), -ENOENT);
  path_in(p, sizeof(p), root, "dir/sub/up");
  CHECK_EQ_INT(symlink("../..", p), 0);
  CHECK_EQ_INT(cap_store_open_input(&s, "dir/sub/up/in.bin", &fd, &size), -ENOENT);
  /* A dangling symlink. */
  path_in(p, sizeof(p), root, "dangling");
  CHECK_EQ_INT(symlink("/nonexistent/x", p), 0);
  CHECK_EQ_INT(cap_store_open_input(&s, "dangling", &fd, &size), -ENOENT);
  CHECK_EQ_INT(fd, -7);

  /* A FIFO: refused at once, never blocks (no writer exists). */
  path_in(p, sizeof(p), root, "fifo");
  CHECK_EQ_INT(mkfifo(p, 0644), 0);
  alarm(5); /* Should it block, die rather than hang. */
  CHECK_EQ_INT(cap_store_open_input(&s, "fifo", &fd, &size), -ENOENT);
  path_in(p, sizeof(p), root, "dir/fifo2");
  CHECK_EQ_INT(mkfifo(p, 0644), 0);
  CHECK_EQ_INT(cap_store_open_input(&s, "dir/fifo2", &fd, &size), -ENOENT);
  /* A FIFO used as a directory. */
  CHECK_EQ_INT(cap_store_open_input(&s, "fifo/x", &fd, &size), -ENOENT);
  alarm(0);
  /* Nor is a device reached through a symlink. */
  path_in(p, sizeof(p), root, "devnull");
  CHECK_EQ_INT(symlink("/dev/null", p), 0);
  CHECK_EQ_INT(cap_store_open_input(&s, "devnull", &fd, &size), -ENOENT);

  /* Unfinished outputs in the temp directory are nobody's input. */
  path_in(p, sizeof(p), root, CAP_STORE_TMP_DIR "/job.mp4");
  CHECK_EQ_INT(write_file(p, "partial"), 0);
  CHECK_EQ_INT(cap_store_open_input(&s, CAP_STORE_TMP_DIR "/job.mp4", &fd, &size), -ENOENT);
  CHECK_EQ_INT(cap_store_open_input(&s, CAP_STORE_TMP_DIR, &fd, &size), -ENOENT);
  CHECK_EQ_INT(fd, -7);

  /* A segment longer than a file name may be. */
  char key[700];
  memset(key, 'z', 300);
  key[300] = '\0';
  CHECK_EQ_INT(cap_store_open_input(&s, key, &fd, &size), -ENOENT);
  snprintf(key, sizeof(key), "dir/");
  memset(key + 4, 'z', 300);
  strcpy(key + 304, "/x.mp4");
  CHECK_EQ_INT(cap_store_open_input(&s, key, &fd, &size), -ENOENT);
  CHECK_EQ_INT(fd, -7);

  /* Unreadable: a permission error is not reported as missing (unless
   * we are root, who reads everything). */
  if (geteuid() != 0) {
    path_in(p, sizeof(p), root, "noread");
    CHECK_EQ_INT(write_file(p, "x"), 0);
    chmod(p, 0);
    CHECK_EQ_INT(cap_store_open_input(&s, "noread", &fd, &size), -EACCES);
  }
  cap_store_close(&s);
}

static void test_commit(void) {
  struct cap_store s;
  char err[256];
  char p[512], q[512], buf[256];
  if (!CHECK_EQ_INT(cap_store_open(&s, root, err, sizeof(err)), 0))
    return;

  /* tmp_path names a file inside ROOT/.cap-tmp. */
  char tmp[512];
  CHECK_EQ_INT(cap_store_tmp_path(&s, "j1.mp4", tmp, sizeof(tmp)), 0);
  snprintf(p, sizeof(p), "%s/%s/j1.mp4", s.root, CAP_STORE_TMP_DIR);
  CHECK_EQ_STR(tmp, p);
  CHECK(tmp[0] == '/');
  char tiny[8];
  CHECK_EQ_INT(cap_store_tmp_path(&s, "j1.mp4", tiny, sizeof(tiny)), -ENAMETOOLONG);

  /* tmp_size: missing, then present. */
  CHECK_EQ_INT(cap_store_tmp_size(&s, "j1.mp4"), -ENOENT);
  CHECK_EQ_INT(write_file(tmp, "rendered bytes"), 0);
  CHECK_EQ_INT(cap_store_tmp_size(&s, "j1.mp4"), 14);

  /* Commit creates the parent directories and moves the file. */
  CHECK_EQ_INT(cap_store_commit(&s, "j1.mp4", "renders/2024/01/out.mp4"), 0);
  CHECK(!exists(tmp));
  CHECK_EQ_INT(cap_store_tmp_size(&s, "j1.mp4"), -ENOENT);
  path_in(p, sizeof(p), root, "renders/2024/01/out.mp4");
  CHECK_EQ_INT(read_file(p, buf, sizeof(buf)), 14);
  CHECK_EQ_STR(buf, "rendered bytes");
  struct stat st;
  path_in(p, sizeof(p), root, "renders/2024");
  CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode));
  /* The committed object reads back through the store. */
  int fd = -1;
  uint64_t size = 0;
  CHECK_EQ_INT(cap_store_open_input(&s, "renders/2024/01/out.mp4", &fd, &size), 0);
  CHECK_EQ_INT(size, 14);
  if (fd >= 0)
    close(fd);

  /* Commit replaces an existing object whole. */
  CHECK_EQ_INT(cap_store_tmp_path(&s, "j2.mp4", tmp, sizeof(tmp)), 0);
  CHECK_EQ_INT(write_file(tmp, "v2"), 0);
  /* Keep the old object open: a reader sees the old content, never half. */
  path_in(p, sizeof(p), root, "renders/2024/01/out.mp4");
  int old = open(p, O_RDONLY | O_CLOEXEC);
  struct stat before;
  CHECK(stat(p, &before) == 0);
  CHECK_EQ_INT(cap_store_commit(&s, "j2.mp4", "renders/2024/01/out.mp4"), 0);
  CHECK_EQ_INT(read_file(p, buf, sizeof(buf)), 2);
  CHECK_EQ_STR(buf, "v2");
  if (CHECK(old >= 0)) {
    ssize_t r = read(old, buf, sizeof(buf));
    CHECK_EQ_MEM(buf, r, "rendered bytes", 14);
    close(old);
  }
  struct stat after;
  CHECK(stat(p, &after) == 0 && after.st_ino != before.st_ino);

  /* A top-level key (no directories to create). */
  CHECK_EQ_INT(write_file(tmp, "top"), 0);
  CHECK_EQ_INT(cap_store_commit(&s, "j2.mp4", "top.bin"), 0);
  path_in(p, sizeof(p), root, "top.bin");
  CHECK_EQ_INT(read_file(p, buf, sizeof(buf)), 3);

  /* Committing a temp file that does not exist fails. */
  CHECK_EQ_INT(cap_store_commit(&s, "nope.mp4", "renders/nope.mp4"), -ENOENT);
  path_in(p, sizeof(p), root, "renders/nope.mp4");
  CHECK(!exists(p));

  /* A directory component that is a symlink out of the root: refused,
   * nothing written outside. */
  path_in(p, sizeof(p), root, "escape");
  CHECK_EQ_INT(symlink(outside, p), 0);
  CHECK_EQ_INT(write_file(tmp, "evil"), 0);
  int rc = cap_store_commit(&s, "j2.mp4", "escape/planted.mp4");
  CHECK(rc < 0);
  CHECK_EQ_INT(rc, -ENOENT);
  path_in(q, sizeof(q), outside, "planted.mp4");
  CHECK(!exists(q));
  rc = cap_store_commit(&s, "j2.mp4", "escape/deeper/planted.mp4");
  CHECK(rc < 0);
  path_in(q, sizeof(q), outside, "deeper");
  CHECK(!exists(q));
  /* The same through a deeper symlinked directory. */
  path_in(p, sizeof(p), root, "renders/esc2");
  CHECK_EQ_INT(symlink(outside, p), 0);
  rc = cap_store_commit(&s, "j2.mp4", "renders/esc2/planted.mp4");
  CHECK(rc < 0);
  path_in(q, sizeof(q), outside, "planted.mp4");
  CHECK(!exists(q));
  /* The temp file is still there for the caller to discard. */
  CHECK_EQ_INT(cap_store_tmp_size(&s, "j2.mp4"), 4);

  /* A symlink as the final component is replaced, not written through. */
  path_in(q, sizeof(q), outside, "target.txt");
  CHECK_EQ_INT(write_file(q, "original"), 0);
  path_in(p, sizeof(p), root, "renders/final-link.mp4");
  CHECK_EQ_INT(symlink(q, p), 0);
  CHECK_EQ_INT(cap_store_commit(&s, "j2.mp4", "renders/final-link.mp4"), 0);
  CHECK_EQ_INT(read_file(q, buf, sizeof(buf)), 8);
  CHECK_EQ_STR(buf, "original");
  CHECK(lstat(p, &st) == 0 && S_ISREG(st.st_mode));
  CHECK_EQ_INT(read_file(p, buf, sizeof(buf)), 4);
  CHECK_EQ_STR(buf, "evil");

  /* A file in the way of a directory. */
  CHECK_EQ_INT(write_file(tmp, "x"), 0);
  rc = cap_store_commit(&s, "j2.mp4", "top.bin/x.mp4");
  CHECK(rc < 0);
  CHECK_EQ_INT(cap_store_tmp_size(&s, "j2.mp4"), 1);

  /* Discard removes the temp file; discarding again is harmless. */
  cap_store_discard(&s, "j2.mp4");
  CHECK_EQ_INT(cap_store_tmp_size(&s, "j2.mp4"), -ENOENT);
  CHECK(!exists(tmp));
  cap_store_discard(&s, "j2.mp4");
  cap_store_discard(&s, "never-existed");

  /* tmp_size does not follow a symlink in the temp directory. */
  CHECK_EQ_INT(cap_store_tmp_path(&s, "ln", tmp, sizeof(tmp)), 0);
  path_in(q, sizeof(q), outside, "target.txt");
  CHECK_EQ_INT(symlink(q, tmp), 0);
  CHECK_EQ_INT(cap_store_tmp_size(&s, "ln"), strlen(q));
  cap_store_discard(&s, "ln");
  CHECK(!exists(tmp));
  CHECK(exists(q));
  cap_store_close(&s);
}

/* A job's own temp directory: made fresh, emptied and removed with what
 * its child left, and swept at start-up like temp files. */
static void test_tmp_dirs(void) {
  struct cap_store s;
  char err[200], path[512], q[512];
  if (!CHECK_EQ_INT(cap_store_open(&s, root, err, sizeof(err)), 0))
    return;
  CHECK_EQ_INT(cap_store_tmp_mkdir(&s, "JOB1"), 0);
  CHECK_EQ_INT(cap_store_tmp_mkdir(&s, "JOB1"), -EEXIST);
  CHECK_EQ_INT(cap_store_tmp_path(&s, "JOB1", path, sizeof(path)), 0);
  struct stat st;
  CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
  path_in(q, sizeof(q), path, "out.mp4");
  CHECK_EQ_INT(write_file(q, "x"), 0);
  path_in(q, sizeof(q), path, "seg-1.m4s.tmp");
  CHECK_EQ_INT(write_file(q, "y"), 0);
  CHECK_EQ_INT(cap_store_tmp_size(&s, "JOB1/out.mp4"), 1);
  cap_store_tmp_rmdir(&s, "JOB1");
  CHECK(!exists(path));
  cap_store_tmp_rmdir(&s, "JOB1"); /* Gone already: nothing happens. */

  /* Left over by a crash: the next start empties the temp directory. */
  CHECK_EQ_INT(cap_store_tmp_mkdir(&s, "JOB2"), 0);
  CHECK_EQ_INT(cap_store_tmp_path(&s, "JOB2/out.mp4", q, sizeof(q)), 0);
  CHECK_EQ_INT(write_file(q, "z"), 0);
  cap_store_close(&s);
  if (!CHECK_EQ_INT(cap_store_open(&s, root, err, sizeof(err)), 0))
    return;
  CHECK_EQ_INT(cap_store_tmp_path(&s, "JOB2", path, sizeof(path)), 0);
  CHECK(!exists(path));
  cap_store_close(&s);
}

int main(void) {
  snprintf(base, sizeof(base), "/tmp/cap-test-store-XXXXXX");
  if (mkdtemp(base) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  path_in(root, sizeof(root), base, "data/store");
  path_in(outside, sizeof(outside), base, "outside");
  if (mkdir(outside, 0755) != 0) {
    perror("mkdir");
    return 1;
  }
  test_open();
  test_key_usable();
  test_open_input();
  test_commit();
  test_tmp_dirs();
  rm_rf(base);
  return check_report();
}
