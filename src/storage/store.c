#include "store.h"

#include "alloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* mkdir -p for the root itself, which the operator names. */
static int mkdirs(const char *dir) {
  char *p = xstrdup(dir);
  int rc = 0;
  for (char *s = p + 1; *s; s++) {
    if (*s != '/')
      continue;
    *s = '\0';
    if (mkdir(p, 0750) != 0 && errno != EEXIST) {
      rc = -errno;
      break;
    }
    *s = '/';
  }
  if (rc == 0 && mkdir(p, 0750) != 0 && errno != EEXIST)
    rc = -errno;
  free(p);
  return rc;
}

/* Removes what dir_fd holds; depth 1 also empties and removes the job
 * directories in it (a child writes files only, never deeper trees of
 * its own that this must follow). */
static void empty_dir(int dir_fd, int depth) {
  int fd = dup(dir_fd);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  struct dirent *e;
  if (d == NULL) {
    if (fd >= 0)
      close(fd);
    return;
  }
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (unlinkat(dir_fd, e->d_name, 0) == 0 || errno != EISDIR || depth == 0)
      continue;
    int sub = openat(dir_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub >= 0) {
      empty_dir(sub, depth - 1);
      close(sub);
    }
    unlinkat(dir_fd, e->d_name, AT_REMOVEDIR);
  }
  closedir(d);
}

static void empty_tmp(int tmp_fd) {
  empty_dir(tmp_fd, 2);
}

int cap_store_open(struct cap_store *s, const char *dir, char *err, size_t errlen) {
  int rc;
  s->root = NULL;
  s->root_fd = s->tmp_fd = -1;
  if ((rc = mkdirs(dir)) != 0) {
    snprintf(err, errlen, "data_dir: cannot create %s: %s", dir, strerror(-rc));
    return rc;
  }
  s->root_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s->root_fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "data_dir: cannot open %s: %s", dir, strerror(errno));
    return rc;
  }
  if (mkdirat(s->root_fd, CAP_STORE_TMP_DIR, 0700) != 0 && errno != EEXIST) {
    rc = -errno;
    snprintf(err, errlen, "data_dir: cannot create %s/%s: %s", dir, CAP_STORE_TMP_DIR,
             strerror(errno));
    cap_store_close(s);
    return rc;
  }
  s->tmp_fd =
      openat(s->root_fd, CAP_STORE_TMP_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (s->tmp_fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "data_dir: cannot open %s/%s: %s", dir, CAP_STORE_TMP_DIR,
             strerror(errno));
    cap_store_close(s);
    return rc;
  }
  char *real = realpath(dir, NULL);
  s->root = real ? real : xstrdup(dir);
  empty_tmp(s->tmp_fd);
  return 0;
}

void cap_store_close(struct cap_store *s) {
  if (s->tmp_fd >= 0)
    close(s->tmp_fd);
  if (s->root_fd >= 0)
    close(s->root_fd);
  free(s->root);
  s->root = NULL;
  s->root_fd = s->tmp_fd = -1;
}

static int under(const char *key, const char *dir) {
  size_t n = strlen(dir);
  return strncmp(key, dir, n) == 0 && (key[n] == '/' || key[n] == '\0');
}

int cap_store_key_reserved(const char *key) {
  return under(key, CAP_STORE_TMP_DIR) || under(key, CAP_STORE_STATE_DIR);
}

int cap_store_key_usable(const char *key) {
  if (cap_store_key_reserved(key))
    return 0;
  /* Each segment becomes a file name, which the file system caps. */
  for (const char *p = key, *slash; *p; p = slash + 1) {
    slash = strchr(p, '/');
    size_t len = slash ? (size_t)(slash - p) : strlen(p);
    if (len > NAME_MAX)
      return 0;
    if (slash == NULL)
      break;
  }
  return 1;
}

/* Walks the directories of key below the root without following links.
 * Returns an fd of the last directory (the caller closes it) and points
 * *last at the final component, or -errno.  With create, missing
 * directories are made. */
static int walk(struct cap_store *s, const char *key, int create, char *copy, const char **last) {
  int dir = dup(s->root_fd);
  if (dir < 0)
    return -errno;
  char *p = copy, *slash;
  while ((slash = strchr(p, '/')) != NULL) {
    *slash = '\0';
    if (create && mkdirat(dir, p, 0750) != 0 && errno != EEXIST) {
      int rc = -errno;
      close(dir);
      return rc;
    }
    int next = openat(dir, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int saved = errno;
    close(dir);
    if (next < 0)
      return saved == ELOOP || saved == ENOTDIR || saved == ENAMETOOLONG ? -ENOENT : -saved;
    dir = next;
    p = slash + 1;
  }
  *last = p;
  return dir;
}

int cap_store_open_input(struct cap_store *s, const char *key, int *fd, uint64_t *size) {
  /* Other jobs' unfinished outputs are nobody's input. */
  if (cap_store_key_reserved(key))
    return -ENOENT;
  char *copy = xstrdup(key);
  const char *last;
  struct stat st;
  int rc, dir = walk(s, key, 0, copy, &last);
  if (dir < 0) {
    free(copy);
    return dir;
  }
  int f = openat(dir, last, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  rc = f < 0 ? (errno == ELOOP || errno == ENAMETOOLONG ? -ENOENT : -errno) : 0;
  close(dir);
  free(copy);
  if (rc != 0)
    return rc;
  /* A FIFO or device would block or never end; only plain files are objects. */
  if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(f);
    return -ENOENT;
  }
  fcntl(f, F_SETFL, fcntl(f, F_GETFL) & ~O_NONBLOCK);
  *fd = f;
  *size = (uint64_t)st.st_size;
  return 0;
}

int cap_store_tmp_path(const struct cap_store *s, const char *name, char *out, size_t n) {
  int len = snprintf(out, n, "%s/%s/%s", s->root, CAP_STORE_TMP_DIR, name);
  return len < 0 || (size_t)len >= n ? -ENAMETOOLONG : 0;
}

int cap_store_commit(struct cap_store *s, const char *name, const char *key) {
  char *copy = xstrdup(key);
  const char *last;
  int rc, dir = walk(s, key, 1, copy, &last);
  if (dir < 0) {
    free(copy);
    return dir;
  }
  rc = renameat(s->tmp_fd, name, dir, last) == 0 ? 0 : -errno;
  if (rc == 0)
    fsync(dir);
  close(dir);
  free(copy);
  return rc;
}

/* Returns 1 when no segment of key is empty, "." or "..".  The API has
 * refused such keys already (cap_key_validate); removing checks again
 * because a bad key here would delete outside the root. */
static int segments_safe(const char *key) {
  for (const char *p = key;; p++) {
    size_t len = strcspn(p, "/");
    if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
      return 0;
    p += len;
    if (*p == '\0')
      return 1;
  }
}

/* Unlinks key when it is a plain file; anything else is no object, so
 * it is -ENOENT and stays, as cap_store_open_input would not open it. */
static int unlink_object(struct cap_store *s, const char *key) {
  char *copy = xstrdup(key);
  const char *last;
  struct stat st;
  int rc, dir = walk(s, key, 0, copy, &last);
  if (dir < 0) {
    free(copy);
    return dir;
  }
  if (fstatat(dir, last, &st, AT_SYMLINK_NOFOLLOW) != 0)
    rc = errno == ENAMETOOLONG ? -ENOENT : -errno;
  else if (!S_ISREG(st.st_mode))
    rc = -ENOENT;
  else
    rc = unlinkat(dir, last, 0) == 0 ? 0 : -errno;
  close(dir);
  free(copy);
  return rc;
}

/* Removes the directories on key's path while they are empty, deepest
 * first: commit created them for objects, and one left without any would
 * stay behind for good.  The first that is not empty (or not a directory
 * of ours: walk follows no symlink) ends it. */
static void prune_parents(struct cap_store *s, const char *key) {
  char *path = xstrdup(key), *slash;
  while ((slash = strrchr(path, '/')) != NULL) {
    *slash = '\0';
    char *copy = xstrdup(path);
    const char *last;
    int dir = walk(s, path, 0, copy, &last);
    int removed = dir >= 0 && unlinkat(dir, last, AT_REMOVEDIR) == 0;
    if (dir >= 0)
      close(dir);
    free(copy);
    if (!removed)
      break;
  }
  free(path);
}

int cap_store_remove(struct cap_store *s, const char *key) {
  if (!segments_safe(key))
    return -EINVAL;
  /* Other jobs' unfinished outputs are nobody's object. */
  if (cap_store_key_reserved(key))
    return -ENOENT;
  int rc = unlink_object(s, key);
  if (rc == 0)
    prune_parents(s, key);
  return rc;
}

int cap_store_tmp_create(struct cap_store *s, const char *name) {
  int fd = openat(s->tmp_fd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  return fd < 0 ? -errno : fd;
}

int cap_store_tmp_open(struct cap_store *s, const char *name) {
  int fd = openat(s->tmp_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

void cap_store_discard(struct cap_store *s, const char *name) {
  unlinkat(s->tmp_fd, name, 0);
}

int cap_store_tmp_mkdir(struct cap_store *s, const char *name) {
  return mkdirat(s->tmp_fd, name, 0700) == 0 ? 0 : -errno;
}

void cap_store_tmp_rmdir(struct cap_store *s, const char *name) {
  int fd = openat(s->tmp_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return;
  empty_dir(fd, 1);
  close(fd);
  unlinkat(s->tmp_fd, name, AT_REMOVEDIR);
}

int64_t cap_store_tmp_size(const struct cap_store *s, const char *name) {
  struct stat st;
  if (fstatat(s->tmp_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
    return -errno;
  return (int64_t)st.st_size;
}
