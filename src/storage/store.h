#ifndef CAP_STORE_H
#define CAP_STORE_H

#include <stddef.h>
#include <stdint.h>

/* The local file object store, the embedded default: key "a/b.mp4" is the
 * file ROOT/a/b.mp4.  Keys are validated by cap_key_validate first; here
 * every path component is also opened with O_NOFOLLOW relative to its
 * parent, so no symlink in the tree can lead outside the root.  Outputs
 * are written into ROOT/.cap-tmp and renamed into place, so a reader never
 * sees half an object. */

#define CAP_STORE_TMP_DIR ".cap-tmp"
/* The journal's directory when it lives in the data directory: no key
 * may name it either, so that no client reads or overwrites the journal
 * through the file store. */
#define CAP_STORE_STATE_DIR ".cap-state"

struct cap_store {
  char *root;
  int root_fd;
  int tmp_fd;
};

/* Opens (creating if needed) the store at dir and empties its temp
 * directory of what a crash left.  Returns 0 or -errno with err set. */
int cap_store_open(struct cap_store *s, const char *dir, char *err, size_t errlen);
void cap_store_close(struct cap_store *s);
/* Returns 1 when key lies in the store's temp directory, which no client
 * may name. */
int cap_store_key_reserved(const char *key);
/* Returns 1 when key can name an object here: not inside the temp
 * directory, no segment longer than a file name may be. */
int cap_store_key_usable(const char *key);
/* Objects are reached through objstore.h, whose file backend calls
 * cap_store_open_input, cap_store_commit, cap_store_remove and
 * cap_store_key_usable; the
 * temp-file functions are the scratch space of both backends and of jobs.
 * Opens the object key for reading; *fd is the caller's to close.  Returns
 * 0, -ENOENT (missing, or reached through a symlink or non-directory), or
 * another -errno. */
int cap_store_open_input(struct cap_store *s, const char *key, int *fd, uint64_t *size);
/* Writes the absolute path of temp file name into out. */
int cap_store_tmp_path(const struct cap_store *s, const char *name, char *out, size_t n);
/* Moves temp file name to key, creating parent directories.  Returns 0 or -errno. */
int cap_store_commit(struct cap_store *s, const char *name, const char *key);
/* Removes the object key and then each parent directory of it that is
 * left empty, deepest first, as commit creates them.  Only a plain file is
 * an object: a missing key, one in the temp directory, or one reached
 * through a symlink or naming anything else is -ENOENT and left alone.
 * Returns 0, -ENOENT, -EINVAL for an empty, "." or ".." segment, or
 * another -errno. */
int cap_store_remove(struct cap_store *s, const char *key);
/* Creates temp file name (mode 0600, must not exist); returns its fd
 * (read-write, close-on-exec) or -errno. */
int cap_store_tmp_create(struct cap_store *s, const char *name);
/* Opens temp file name for reading; returns the fd or -errno. */
int cap_store_tmp_open(struct cap_store *s, const char *name);
/* Removes temp file name if it exists. */
void cap_store_discard(struct cap_store *s, const char *name);
/* Creates the temp directory name (mode 0700, must not exist), where one
 * job's child may write and nothing else.  Returns 0 or -errno. */
int cap_store_tmp_mkdir(struct cap_store *s, const char *name);
/* Removes the temp directory name and the files in it, if it exists. */
void cap_store_tmp_rmdir(struct cap_store *s, const char *name);
/* Returns the size of temp file name, or -errno. */
int64_t cap_store_tmp_size(const struct cap_store *s, const char *name);

#endif
